//! `POST /orders`: the tenant's order policy prices the items, its
//! validation policies check the priced order, and the order is placed
//! `PENDING` with its ledger posting, history row and event — or nothing.

use std::collections::BTreeMap;

use super::super::credits::{Render, check_metadata};
use super::super::customers::{Customer, not_found};
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim};
use super::super::policy::{policy_ref, price, validate};
use super::super::{App, Reply, RequestCtx};
use super::{OrderDetails, PendingOrder, order_lines, place_order};
use crate::config::PricingKind;
use crate::domain::order::{MAX_ORDER_ITEMS, OrderItem, OrderLine};
use crate::domain::{Currency, CustomerId, Money};
use crate::policy::registry::CallContext;
use crate::policy::types;
use crate::store::{OrderSource, Queries, Transactions, TxOps};

/// `POST /orders`.
#[derive(Debug, Clone)]
pub struct CreateOrderCommand {
    /// Who orders.
    pub customer_id: String,
    /// ISO-4217 code; the tenant's default currency when absent.
    pub currency: Option<String>,
    /// `(sku, quantity)`, 1 to 100 of them.
    pub items: Vec<(String, i64)>,
    /// Handed to the policies and stored with the order.
    pub metadata: BTreeMap<String, String>,
}

impl App {
    /// Creates a `PENDING` order priced by the tenant's order policy.
    pub async fn create_order(
        &self,
        ctx: &RequestCtx,
        cmd: CreateOrderCommand,
        render: impl Render<OrderDetails>,
    ) -> Result<Reply> {
        let customer = CustomerId::new(&cmd.customer_id)?;
        let currency = match (&cmd.currency, self.tenant_currency(&ctx.tenant)) {
            (Some(code), _) => Currency::parse(code).map_err(crate::domain::DomainError::from)?,
            (None, Some(default)) => default,
            (None, None) => {
                return Err(AppError::Invalid(
                    "currency is required: the tenant has no default currency".into(),
                ));
            }
        };
        if cmd.items.is_empty() || cmd.items.len() > MAX_ORDER_ITEMS {
            return Err(AppError::Invalid(format!(
                "items: 1 to {MAX_ORDER_ITEMS} required, got {}",
                cmd.items.len()
            )));
        }
        let items = cmd
            .items
            .iter()
            .map(|(sku, quantity)| OrderItem::new(sku, *quantity))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        check_metadata(&cmd.metadata)?;
        let (pricing, validation) = self.policies_for(&ctx.tenant, PricingKind::Order)?;

        // Price and check outside any transaction: both need the customer's
        // attributes and the request, not any locked state.
        let record = self
            .store()
            .customer(&ctx.tenant, customer.as_str())
            .await?
            .ok_or_else(|| not_found(customer.as_str()))?;
        let now = self.now();
        let call_ctx = CallContext {
            customer_id: customer.to_string(),
            customer_attributes: Customer::policy_attributes_of(&record.attributes)?,
            now_ms: now,
        };
        let metadata: Vec<(String, String)> = cmd
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let wit_items: Vec<types::OrderItem> = items
            .iter()
            .map(|i| types::OrderItem {
                sku: i.sku().to_owned(),
                quantity: i.quantity(),
            })
            .collect();
        let request = types::PricingRequest::Order(types::OrderRequest {
            currency: currency.code().to_owned(),
            items: wit_items.clone(),
            metadata: metadata.clone(),
        });
        let quote = price(&pricing, call_ctx.clone(), &request)?;
        let lines = order_lines(&pricing, currency, &quote)?;
        let total = Money::checked_sum(currency, lines.iter().map(OrderLine::amount))?;
        validate(
            &validation,
            &call_ctx,
            &types::ValidationSubject::Order(types::OrderSubject {
                currency: currency.code().to_owned(),
                items: wit_items,
                total: types::Money {
                    amount: total.minor,
                    currency: currency.code().to_owned(),
                },
                metadata,
            }),
        )?;

        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        let placed = place_order(
            &mut tx,
            ctx,
            now,
            PendingOrder {
                customer,
                currency,
                items,
                lines,
                quote,
                priced_by: policy_ref(&pricing),
                metadata: cmd.metadata,
                source: OrderSource::Api,
                source_id: None,
                reason: "created through the API".into(),
            },
        )
        .await?;
        let response = render(&placed);
        tx.commit(Some(response.clone())).await?;
        Ok(Reply {
            response,
            replayed: false,
        })
    }

    /// The tenant's default currency, if its config sets one.
    fn tenant_currency(&self, tenant: &str) -> Option<Currency> {
        self.tenants().get(tenant).and_then(|t| t.currency)
    }
}
