//! Subscriptions: create (trial per policy), read, change plan (now with
//! proration, or at period end), cancel (now or at period end), and the
//! scheduler that renews, ends trials and expires them.
