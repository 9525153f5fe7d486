//! An outbox event as a Kafka record in the CloudEvents 1.0 Kafka protocol
//! binding, binary content mode: the value is the event's `data` (JSON),
//! `content-type` carries `datacontenttype`, and every other attribute is a
//! `ce_` header (UTF-8). The key is the customer id (the event's subject).
//!
//! Extensions (lower-case alphanumeric names, as the spec requires):
//! `ce_tenantid`, `ce_position` (the feed position: the same number a feed
//! reader sees), `ce_transactionid` (the business transaction that
//! emitted it) and `ce_requestid` (the request that caused it: its
//! `X-Request-Id`; absent on events stored before it was kept). The ids are the feed's, so a consumer can deduplicate
//! across both.

use crate::api::tenant::views::rfc3339_millis;
use crate::store::EventRecord;

/// What the relay produces for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The customer id (partition key).
    pub key: String,
    /// The event's `data`, as stored.
    pub value: String,
    /// Header name and UTF-8 value, in a stable order.
    pub headers: Vec<(&'static str, String)>,
}

/// The CloudEvents `datacontenttype` of every FluxPay event.
pub const CONTENT_TYPE: &str = "application/json";

/// `event` of `tenant` as a binary-mode record.
pub fn kafka_record(tenant: &str, event: &EventRecord) -> KafkaRecord {
    KafkaRecord {
        key: event.subject.clone(),
        value: event.data.clone(),
        headers: vec![
            ("content-type", CONTENT_TYPE.to_owned()),
            ("ce_specversion", "1.0".to_owned()),
            ("ce_id", event.event_id.clone()),
            ("ce_source", event.source.clone()),
            ("ce_type", event.event_type.clone()),
            ("ce_subject", event.subject.clone()),
            ("ce_time", rfc3339_millis(event.time)),
            ("ce_tenantid", tenant.to_owned()),
            ("ce_position", event.feed_seq.to_string()),
            ("ce_transactionid", event.transaction_id.clone()),
        ]
        .into_iter()
        .chain(
            event
                .request_id
                .clone()
                .map(|request| ("ce_requestid", request)),
        )
        .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_is_a_ce_header_and_the_value_is_the_data() {
        let event = EventRecord {
            feed_seq: 42,
            event_id: "evt_1".into(),
            event_type: "credit.deducted".into(),
            source: "/fluxpay/tenants/acme".into(),
            subject: "cus_1".into(),
            time: 1_763_640_000_123,
            data: r#"{"credits":5}"#.into(),
            transaction_id: "tx_1".into(),
            request_id: Some("req_1".into()),
        };
        let record = kafka_record("acme", &event);
        assert_eq!(record.key, "cus_1");
        assert_eq!(record.value, r#"{"credits":5}"#);
        let header = |name: &str| {
            record
                .headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("content-type"), Some("application/json"));
        assert_eq!(header("ce_specversion"), Some("1.0"));
        assert_eq!(header("ce_time"), Some("2025-11-20T12:00:00.123Z"));
        assert_eq!(header("ce_position"), Some("42"));
        assert_eq!(header("ce_tenantid"), Some("acme"));
        assert_eq!(header("ce_requestid"), Some("req_1"));
        let older = EventRecord {
            request_id: None,
            ..event
        };
        assert!(
            kafka_record("acme", &older)
                .headers
                .iter()
                .all(|(n, _)| *n != "ce_requestid")
        );
        // Header names: `ce_` + a lower-case alphanumeric attribute name.
        for (name, _) in &record.headers {
            let attribute = name.strip_prefix("ce_").unwrap_or("datacontenttype");
            assert!(
                attribute
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{name}"
            );
        }
    }
}
