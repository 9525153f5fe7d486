//! Orders: create (priced by the tenant's `order` policy, checked by its
//! validation policies), read and cancel; and the order a subscription
//! renewal or a usage period close leaves for payment.
