//! The configuration's database section and tenant API settings: what a
//! valid file means, and that each mistake names the file and the field.

use std::path::Path;

use fluxpay_host::config::{self, ConfigErrors, DatabaseUrl, SqliteSynchronous};

const FILE: &str = "conf/tenants.yaml";
const SHA: &str = "5fda204053efa59b538a182e6745a1fb466969b20525192a262e5dbcdce8a7e5";

fn parse(yaml: &str) -> Result<config::Config, ConfigErrors> {
    config::parse(Path::new(FILE), yaml)
}

#[track_caller]
fn assert_error(yaml: &str, field: &str, text: &str) {
    let errors = parse(yaml).expect_err("the configuration should be refused");
    assert!(
        errors
            .iter()
            .any(|e| e.field == field && e.message.contains(text)),
        "no error at `{field}` containing `{text}` in:\n{errors}"
    );
    assert!(errors.to_string().contains(&format!("{FILE}: {field}: ")));
}

#[test]
fn the_database_defaults_to_an_sqlite_file_next_to_the_config() {
    let config = parse("tenants: {}\n").unwrap();
    let DatabaseUrl::Sqlite(path) = &config.database.url else {
        panic!("{:?}", config.database.url)
    };
    assert!(path.ends_with("conf/fluxpay.db"), "{}", path.display());
    assert!(path.is_absolute());
    assert_eq!(config.database.max_connections, 8);
    assert_eq!(config.database.sqlite_synchronous, SqliteSynchronous::Full);
    assert_eq!(config.database.idempotency_retention_hours, 48);
    assert_eq!(config.database.outbox_retention_days, 30);
}

#[test]
fn a_database_section_resolves_paths_and_hides_postgres_credentials() {
    let config = parse(
        "database: { url: 'sqlite://../data/money.db', max_connections: 3, sqlite_synchronous: normal, idempotency_retention_hours: 72, outbox_retention_days: 7 }\ntenants: {}\n",
    )
    .unwrap();
    let DatabaseUrl::Sqlite(path) = &config.database.url else {
        panic!()
    };
    assert!(
        path.ends_with("conf/../data/money.db"),
        "{}",
        path.display()
    );
    assert_eq!(config.database.max_connections, 3);
    assert_eq!(
        config.database.sqlite_synchronous,
        SqliteSynchronous::Normal
    );
    assert_eq!(config.database.idempotency_retention_hours, 72);
    assert_eq!(config.database.outbox_retention_days, 7);

    let config =
        parse("database: { url: 'postgres://app:hunter2@db:5432/fluxpay' }\ntenants: {}\n")
            .unwrap();
    assert!(matches!(config.database.url, DatabaseUrl::Postgres(_)));
    let debug = format!("{config:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[test]
fn database_mistakes_name_their_field() {
    assert_error(
        "database: { url: 'mysql://x' }\ntenants: {}\n",
        "database.url",
        "sqlite:// or postgres://",
    );
    assert_error(
        "database: { url: 'sqlite://:memory:' }\ntenants: {}\n",
        "database.url",
        "in-memory",
    );
    assert_error(
        "database: { url: 'sqlite://x.db', max_connections: 0 }\ntenants: {}\n",
        "database.max_connections",
        "at least 1",
    );
    assert_error(
        "database: { url: 'sqlite://x.db', sqlite_synchronous: off }\ntenants: {}\n",
        "database.sqlite_synchronous",
        "full, normal",
    );
    assert_error(
        "database: { url: 'sqlite://x.db', outbox_retention_days: 0 }\ntenants: {}\n",
        "database.outbox_retention_days",
        "1..=3650",
    );
    assert_error(
        "database: { url: 'sqlite://x.db', idempotency_retention_hours: 12 }\ntenants: {}\n",
        "database.idempotency_retention_hours",
        "minimum of 24",
    );
    assert_error(
        "database: { url: 'sqlite://x.db', pool: 3 }\ntenants: {}\n",
        "database",
        "unknown field `pool`",
    );
}

#[test]
fn tenant_api_settings_resolve_keys_signing_and_currency() {
    let config = parse(&format!(
        "tenants:\n  acme:\n    currency: EUR\n    api_keys: [{{ id: k-1, sha256: {SHA} }}]\n    signing: {{ secret_env: ACME_SIGNING_SECRET }}\n    subscriptions: {{ pay_from_credits: true, credits_per_major_unit: 100 }}\n  sandbox:\n    dev: true\n    api_keys: [{{ id: s-1, sha256: {} }}]\n  nokeys: {{}}\n",
        SHA.replace('5', "6")
    ))
    .unwrap();
    let acme = &config.tenants["acme"].api;
    assert!(!acme.dev);
    assert_eq!(acme.currency.unwrap().code(), "EUR");
    assert_eq!(acme.api_keys[0].id, "k-1");
    assert_eq!(hex::encode(acme.api_keys[0].sha256), SHA);
    assert_eq!(
        acme.signing.as_ref().unwrap().secret_env,
        "ACME_SIGNING_SECRET"
    );
    assert!(acme.subscriptions.pay_from_credits);
    assert_eq!(acme.subscriptions.credits_per_major_unit, Some(100));
    assert!(config.tenants["sandbox"].api.dev);
    assert!(config.tenants["sandbox"].api.signing.is_none());
    assert!(config.tenants["nokeys"].api.api_keys.is_empty());
    // Key digests never show in Debug output.
    assert!(!format!("{config:?}").contains(SHA));
}

#[test]
fn paying_subscriptions_from_credits_needs_a_positive_exchange_rate() {
    let tenant =
        |subscriptions: &str| format!("tenants:\n  acme:\n    subscriptions: {subscriptions}\n");
    assert_error(
        &tenant("{ pay_from_credits: true }"),
        "tenants.acme.subscriptions.credits_per_major_unit",
        "required when pay_from_credits",
    );
    assert_error(
        &tenant("{ pay_from_credits: true, credits_per_major_unit: 0 }"),
        "tenants.acme.subscriptions.credits_per_major_unit",
        "above 0",
    );
    assert_error(
        &tenant("{ pay_from_credits: true, credits_per_major_unit: 1.5 }"),
        "tenants.acme.subscriptions.credits_per_major_unit",
        "expected i64",
    );
    let config = parse(&tenant("{ pay_from_credits: false }")).unwrap();
    assert_eq!(
        config.tenants["acme"]
            .api
            .subscriptions
            .credits_per_major_unit,
        None
    );
}

#[test]
fn tenant_api_mistakes_name_their_field() {
    let key = |id: &str, sha: &str| format!("{{ id: {id}, sha256: {sha} }}");
    assert_error(
        &format!("tenants:\n  acme:\n    api_keys: [{}]\n", key("k", SHA)),
        "tenants.acme.signing",
        "dev: true",
    );
    assert_error(
        &format!(
            "tenants:\n  acme:\n    dev: true\n    api_keys: [{}]\n",
            key("k", "abc")
        ),
        "tenants.acme.api_keys[0].sha256",
        "64 hex digits",
    );
    assert_error(
        &format!(
            "tenants:\n  acme:\n    dev: true\n    api_keys: [{}]\n",
            key("Bad Id", SHA)
        ),
        "tenants.acme.api_keys[0].id",
        "key id",
    );
    assert_error(
        &format!(
            "tenants:\n  acme:\n    dev: true\n    api_keys: [{}, {}]\n",
            key("k", SHA),
            key("k", &SHA.replace('5', "7"))
        ),
        "tenants.acme.api_keys[1].id",
        "duplicate key id",
    );
    assert_error(
        &format!(
            "tenants:\n  a:\n    dev: true\n    api_keys: [{}]\n  b:\n    dev: true\n    api_keys: [{}]\n",
            key("k1", SHA),
            key("k2", SHA)
        ),
        "tenants.b.api_keys[0].sha256",
        "already listed at tenants.a.api_keys[0].sha256",
    );
    assert_error(
        "tenants:\n  acme:\n    signing: { secret_env: 'the secret itself' }\n",
        "tenants.acme.signing.secret_env",
        "never goes in this file",
    );
    assert_error(
        "tenants:\n  acme:\n    currency: usd\n",
        "tenants.acme.currency",
        "upper-case",
    );
    assert_error(
        "tenants:\n  acme:\n    currency: ABC\n",
        "tenants.acme.currency",
        "not an active ISO-4217",
    );
    assert_error(
        "tenants:\n  acme:\n    signing: { secret: x }\n",
        "tenants.acme.signing",
        "unknown field `secret`",
    );
}
