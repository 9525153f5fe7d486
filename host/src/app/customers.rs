//! Customers: the attributes policies see as `customer-attributes`.

use std::collections::BTreeMap;

use super::error::{AppError, Result};
use super::journal::{CUSTOMER_STATE, Recorder, entity, event_type};
use super::{App, RequestCtx};
use crate::domain::CustomerId;
use crate::store::{CustomerRecord, CustomerUpsert, Queries, Transactions, TxOps};

/// Most attributes one customer may have.
pub const MAX_ATTRIBUTES: usize = 64;
/// Longest attribute name, in bytes.
pub const MAX_ATTRIBUTE_NAME: usize = 64;
/// Longest attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE: usize = 1024;

/// A customer as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// The tenant's id for it.
    pub customer_id: String,
    /// Its attributes, by name.
    pub attributes: BTreeMap<String, String>,
    /// +1 per change.
    pub version: i64,
    /// Created (ms since the epoch).
    pub created_at: i64,
    /// Last changed (ms since the epoch).
    pub updated_at: i64,
}

impl Customer {
    fn from_record(record: CustomerRecord) -> Result<Customer> {
        let attributes = parse_attributes(&record.attributes)?;
        Ok(Customer {
            customer_id: record.customer_id,
            attributes,
            version: record.version,
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }

    /// Stored attributes (JSON) as policies receive them: in name order.
    pub(super) fn policy_attributes_of(json: &str) -> Result<Vec<(String, String)>> {
        Ok(parse_attributes(json)?.into_iter().collect())
    }

    /// The attributes as policies receive them: in name order.
    pub fn policy_attributes(&self) -> Vec<(String, String)> {
        self.attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// What `PUT /customers/{id}` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerSaved {
    /// The customer now.
    pub customer: Customer,
    /// Whether it was created by this request.
    pub created: bool,
}

pub(super) fn parse_attributes(json: &str) -> Result<BTreeMap<String, String>> {
    serde_json::from_str(json).map_err(|err| {
        AppError::Internal(format!("stored customer attributes are not a map: {err}"))
    })
}

/// Checks the attribute map's size and names.
pub fn validate_attributes(attributes: &BTreeMap<String, String>) -> Result<()> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(AppError::Invalid(format!(
            "attributes: at most {MAX_ATTRIBUTES} attributes, got {}",
            attributes.len()
        )));
    }
    for (name, value) in attributes {
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME || !plain {
            return Err(AppError::Invalid(format!(
                "attributes: name `{}` must be 1-{MAX_ATTRIBUTE_NAME} characters of A-Z, a-z, 0-9, `_`, `-`, `.`, `:`",
                name.chars().take(80).collect::<String>()
            )));
        }
        if value.len() > MAX_ATTRIBUTE_VALUE {
            return Err(AppError::Invalid(format!(
                "attributes.{name}: at most {MAX_ATTRIBUTE_VALUE} bytes"
            )));
        }
    }
    Ok(())
}

impl App {
    /// Creates the customer (with an empty credit account) or replaces its
    /// attributes. Unchanged attributes write nothing.
    pub async fn put_customer(
        &self,
        ctx: &RequestCtx,
        customer_id: &str,
        attributes: BTreeMap<String, String>,
    ) -> Result<CustomerSaved> {
        let customer_id = CustomerId::new(customer_id)?;
        validate_attributes(&attributes)?;
        let json = serde_json::to_string(&attributes)
            .map_err(|err| AppError::Internal(format!("serialising attributes: {err}")))?;
        let now = self.now();
        let mut tx = self.store().begin(&ctx.tenant).await?;
        let upsert = tx.upsert_customer(customer_id.as_str(), &json, now).await?;
        let (record, created) = match upsert {
            CustomerUpsert::Unchanged(record) => {
                tx.rollback().await?;
                return Ok(CustomerSaved {
                    customer: Customer::from_record(record)?,
                    created: false,
                });
            }
            CustomerUpsert::Created(record) => (record, true),
            CustomerUpsert::Updated(record) => (record, false),
        };
        let operation = super::new_id("op");
        let mut journal = Recorder::new(ctx, &operation, now);
        let (from, event, kind) = if created {
            (None, "create", event_type::CUSTOMER_CREATED)
        } else {
            (
                Some(CUSTOMER_STATE.to_owned()),
                "update",
                event_type::CUSTOMER_UPDATED,
            )
        };
        journal.history(
            entity::CUSTOMER,
            customer_id.as_str(),
            from,
            CUSTOMER_STATE.to_owned(),
            event,
            "customer attributes set by the tenant",
        );
        journal.event(
            kind,
            customer_id.as_str(),
            &serde_json::json!({
                "customerId": customer_id.as_str(),
                "attributes": &attributes,
                "version": record.version,
            }),
        );
        tx.record(journal.finish());
        tx.commit(None).await?;
        Ok(CustomerSaved {
            customer: Customer::from_record(record)?,
            created,
        })
    }

    /// A customer of the tenant; another tenant's customer is not found.
    pub async fn customer(&self, tenant: &str, customer_id: &str) -> Result<Customer> {
        let customer_id = CustomerId::new(customer_id)?;
        let record = self
            .store()
            .customer(tenant, customer_id.as_str())
            .await?
            .ok_or_else(|| not_found(customer_id.as_str()))?;
        Customer::from_record(record)
    }
}

pub(super) fn not_found(customer_id: &str) -> AppError {
    AppError::NotFound(format!("no customer `{customer_id}`"))
}
