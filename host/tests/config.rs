//! The YAML configuration: what a valid file means, and that every mistake
//! is reported with the file and the field path an operator has to fix.
//! (Mistakes only a policy engine can see — missing modules, sha256 pins,
//! wrong worlds, configs a module refuses — are in `reload.rs`.)

use std::path::Path;

use fluxpay_host::config::{self, BindingRole, ConfigErrors, PricingKind};

const FILE: &str = "conf/tenants.yaml";

fn parse(yaml: &str) -> Result<config::Config, ConfigErrors> {
    config::parse(Path::new(FILE), yaml)
}

fn errors(yaml: &str) -> ConfigErrors {
    parse(yaml).expect_err("the configuration should be refused")
}

/// Asserts one error names the file and `field` and its message contains `text`.
fn assert_error(errors: &ConfigErrors, field: &str, text: &str) {
    let found = errors
        .iter()
        .any(|e| e.file == Path::new(FILE) && e.field == field && e.message.contains(text));
    assert!(
        found,
        "no error at `{field}` containing `{text}` in:\n{errors}"
    );
    let rendered = errors.to_string();
    assert!(
        rendered.contains(&format!("{FILE}: {field}: ")),
        "{rendered}"
    );
}

#[test]
fn a_full_configuration_resolves_paths_limits_and_config_blocks() {
    let config = parse(
        r#"
engine:
  artifact_dir: ../.fluxpay/artifacts
  max_concurrent_instances: 32
  max_memory_bytes: 33554432
  default_limits: { fuel: 5000000, deadline_ms: 40 }
tenants:
  acme:
    pricing:
      credit:
        module: ../target/policies/fluxpay-policy-credit.wasm
        sha256: ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789
        config: { features: { image-render: 3 }, tiers: [gold, silver] }
        limits: { fuel: 2000000 }
      order: { module: /abs/order.wasm }
    validation:
      - { name: rules, module: rules.wasm, config: { max: 10 } }
      - { name: limits, module: rules.wasm }
  globex: {}
"#,
    )
    .unwrap();

    let base = std::path::absolute("conf").unwrap();
    assert_eq!(
        config.engine.artifact_dir,
        Some(base.join("../.fluxpay/artifacts"))
    );
    assert_eq!(config.engine.max_concurrent_instances, Some(32));
    assert_eq!(config.engine.settings().max_memory_bytes, 33_554_432);
    assert_eq!(config.engine.default_limits.fuel, 5_000_000);
    assert_eq!(config.engine.default_limits.deadline_ms, 40);

    let acme = &config.tenants["acme"];
    let credit = &acme.pricing[&PricingKind::Credit];
    assert_eq!(credit.name, "credit");
    assert_eq!(credit.role, BindingRole::Pricing(PricingKind::Credit));
    assert_eq!(credit.field, "tenants.acme.pricing.credit");
    assert_eq!(
        credit.module,
        base.join("../target/policies/fluxpay-policy-credit.wasm")
    );
    // Pins are compared in lower case.
    assert_eq!(
        credit.sha256.as_deref(),
        Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
    );
    // YAML config becomes JSON text, keys sorted.
    assert_eq!(
        credit.config_json,
        r#"{"features":{"image-render":3},"tiers":["gold","silver"]}"#
    );
    // Built-in defaults, then engine.default_limits, then the binding's limits.
    assert_eq!(credit.limits.fuel, 2_000_000);
    assert_eq!(credit.limits.deadline_ms, 40);
    assert_eq!(credit.limits.memory_bytes, 16 * 1024 * 1024);

    let order = &acme.pricing[&PricingKind::Order];
    assert_eq!(order.module, Path::new("/abs/order.wasm"));
    assert_eq!(
        order.config_json, "{}",
        "a binding without config gets `{{}}`"
    );

    let names: Vec<_> = acme.validation.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["rules", "limits"], "validation keeps file order");
    assert_eq!(acme.validation[1].field, "tenants.acme.validation[1]");
    assert_eq!(acme.validation[0].module, base.join("rules.wasm"));

    assert!(config.tenants["globex"].bindings().next().is_none());
    assert_eq!(config.bindings().count(), 4);
}

#[test]
fn an_unknown_key_is_refused_with_its_path() {
    let errors = errors(
        r#"
tenants:
  acme:
    pricing:
      credit: { modul: x.wasm }
"#,
    );
    assert_error(
        &errors,
        "tenants.acme.pricing.credit",
        "unknown field `modul`",
    );
}

#[test]
fn an_unknown_pricing_kind_lists_the_valid_ones() {
    let errors = errors("tenants:\n  acme:\n    pricing:\n      credits: { module: x.wasm }\n");
    assert_error(&errors, "tenants.acme.pricing", "unknown field `credits`");
    assert!(
        errors
            .to_string()
            .contains("`credit`, `subscription`, `metered`, `order`")
    );
}

#[test]
fn unknown_keys_in_the_engine_section_and_in_limits_are_refused() {
    let errors1 = errors("engine: { max_memory: 1 }\ntenants: {}\n");
    assert_error(&errors1, "engine", "unknown field `max_memory`");
    let errors2 = errors(
        "tenants:\n  acme:\n    pricing:\n      credit: { module: x.wasm, limits: { feul: 1 } }\n",
    );
    assert_error(
        &errors2,
        "tenants.acme.pricing.credit.limits",
        "unknown field `feul`",
    );
}

#[test]
fn a_repeated_tenant_is_refused_instead_of_silently_replacing_the_first() {
    let errors = errors("tenants:\n  acme: {}\n  acme: {}\n");
    assert_error(&errors, "tenants", "duplicate key `acme`");
}

#[test]
fn validation_names_must_be_unique_and_distinct_from_pricing_kinds() {
    let errors = errors(
        r#"
tenants:
  acme:
    validation:
      - { name: rules, module: a.wasm }
      - { name: rules, module: b.wasm }
      - { name: credit, module: c.wasm }
      - { name: "Bad Name", module: d.wasm }
"#,
    );
    assert_error(
        &errors,
        "tenants.acme.validation[1].name",
        "duplicate policy name `rules`",
    );
    assert_error(
        &errors,
        "tenants.acme.validation[2].name",
        "taken by the pricing kind",
    );
    assert_error(
        &errors,
        "tenants.acme.validation[3].name",
        "must be 1-64 characters",
    );
    assert_eq!(
        errors.0.len(),
        3,
        "every problem is reported at once:\n{errors}"
    );
}

#[test]
fn tenant_ids_must_be_url_safe() {
    let errors = errors("tenants:\n  Acme Corp: {}\n");
    assert_error(&errors, "tenants.Acme Corp", "tenant id `Acme Corp`");
}

#[test]
fn a_malformed_sha256_pin_is_refused() {
    let errors = errors(
        "tenants:\n  acme:\n    pricing:\n      credit: { module: x.wasm, sha256: abc123 }\n",
    );
    assert_error(
        &errors,
        "tenants.acme.pricing.credit.sha256",
        "not a sha256 digest",
    );
}

#[test]
fn limits_that_cannot_work_are_refused_per_binding_and_engine_wide() {
    let errors = errors(
        r#"
engine:
  max_memory_bytes: 16777216
  default_limits: { deadline_ms: 0 }
tenants:
  acme:
    pricing:
      credit: { module: x.wasm, limits: { deadline_ms: 10, memory_bytes: 33554432 } }
"#,
    );
    assert_error(
        &errors,
        "engine.default_limits",
        "limits.deadline_ms must be greater than 0",
    );
    assert_error(
        &errors,
        "tenants.acme.pricing.credit.limits",
        "exceeds the engine's per-instance ceiling",
    );
}

#[test]
fn engine_sizes_outside_what_the_engine_accepts_are_refused() {
    let errors =
        errors("engine: { max_concurrent_instances: 0, max_memory_bytes: 1 }\ntenants: {}\n");
    assert_error(&errors, "engine.max_concurrent_instances", "at least 1");
    assert_error(&errors, "engine.max_memory_bytes", "outside");
}

#[test]
fn a_file_that_is_not_yaml_or_missing_is_reported_against_the_file() {
    let errors = errors("tenants: [unclosed\n");
    assert!(errors.to_string().starts_with(FILE), "{errors}");

    let missing = config::load(Path::new("/nonexistent/fluxpay.yaml")).unwrap_err();
    let text = missing.to_string();
    assert!(
        text.starts_with("/nonexistent/fluxpay.yaml: cannot read the file"),
        "{text}"
    );
}

#[test]
fn the_tenants_section_is_required() {
    let errors = errors("engine: {}\n");
    assert!(
        errors.to_string().contains("missing field `tenants`"),
        "{errors}"
    );
}

#[test]
fn a_tenant_gateway_resolves_with_defaults_and_its_own_settings() {
    let config = parse(
        r#"
pg_simulator: { listen: "127.0.0.1:8090" }
tenants:
  acme:
    gateway:
      kind: toss
      base_url: https://pg.example.com
      secret_env: ACME_PG_SECRET_KEY
      request_timeout_ms: 5000
      breaker: { window_s: 60, minimum_calls: 5, failure_rate: 0.25, open_wait_s: 10 }
      retries: { max: 2, min_delay_ms: 100, max_delay_ms: 400 }
  globex:
    gateway: { kind: simulator }
  initech: {}
  umbrella:
    gateway: { kind: toss, base_url: "https://pg.example.com", secret_env: U, capture: manual }
  wayne:
    gateway: { kind: simulator, capture: automatic }
"#,
    )
    .unwrap();
    assert_eq!(config.pg_simulator, Some("127.0.0.1:8090".parse().unwrap()));
    let acme = config.tenants["acme"].api.gateway.clone().unwrap();
    assert_eq!(
        acme.kind,
        config::GatewayKind::Toss {
            base_url: "https://pg.example.com".into(),
            secret_env: "ACME_PG_SECRET_KEY".into()
        }
    );
    assert_eq!(acme.request_timeout, std::time::Duration::from_secs(5));
    assert_eq!(acme.connect_timeout, std::time::Duration::from_secs(2));
    assert_eq!(acme.resilience.window, std::time::Duration::from_secs(60));
    assert_eq!(acme.resilience.minimum_calls, 5);
    assert_eq!(acme.resilience.failure_rate, 0.25);
    assert_eq!(acme.resilience.retries, 2);
    // Unset settings keep the defaults.
    assert_eq!(acme.resilience.half_open_calls, 3);
    // Toss captures with the approval; the simulator authorizes.
    assert!(acme.capture_with_approval, "toss: automatic by default");
    let globex = config.tenants["globex"].api.gateway.clone().unwrap();
    assert_eq!(globex.kind, config::GatewayKind::Simulator);
    assert!(
        !globex.capture_with_approval,
        "simulator: manual by default"
    );
    let umbrella = config.tenants["umbrella"].api.gateway.clone().unwrap();
    assert!(!umbrella.capture_with_approval, "manual when asked");
    let wayne = config.tenants["wayne"].api.gateway.clone().unwrap();
    assert!(wayne.capture_with_approval, "automatic when asked");
    assert!(config.tenants["initech"].api.gateway.is_none());
}

#[test]
fn gateway_mistakes_name_their_key() {
    let found = errors(
        r#"
pg_simulator: { listen: "0.0.0.0:8090" }
tenants:
  acme:
    gateway: { kind: toss, base_url: "ftp://pg", request_timeout_ms: 0 }
  globex:
    gateway:
      kind: simulator
      breaker: { failure_rate: 1.5, half_open_calls: 0 }
      retries: { max: 11, min_delay_ms: 500, max_delay_ms: 100 }
  initech:
    gateway: { kind: stripe }
  wayne:
    gateway: { kind: simulator, capture: sometimes }
  hooli:
    gateway: { kind: toss, base_url: "https://pg", secret_env: HOOLI_PG,
               service_timeout_s: 7200, void_unconfirmed_after_s: 3600 }
    subscriptions: { charge_card: true, pay_from_credits: true, credits_per_major_unit: 1,
                     dunning_days: [3, 1] }
  umbrella:
    subscriptions: { charge_card: true }
"#,
    );
    assert_error(&found, "pg_simulator.listen", "loopback");
    assert_error(
        &found,
        "tenants.wayne.gateway.capture",
        "`manual` or `automatic`",
    );
    // The janitor would void approvals the service may still fulfil.
    assert_error(
        &found,
        "tenants.hooli.gateway.void_unconfirmed_after_s",
        "longer than service_timeout_s",
    );
    assert_error(
        &found,
        "tenants.hooli.subscriptions.charge_card",
        "from credits or by card",
    );
    assert_error(
        &found,
        "tenants.hooli.subscriptions.dunning_days",
        "ascending",
    );
    assert_error(
        &found,
        "tenants.umbrella.subscriptions.charge_card",
        "gateway",
    );
    assert_error(
        &found,
        "tenants.acme.gateway.base_url",
        "http:// or https://",
    );
    assert_error(&found, "tenants.acme.gateway.secret_env", "required");
    assert_error(&found, "tenants.acme.gateway.request_timeout_ms", "outside");
    // The simulator address was refused, so there is none to use.
    assert_error(&found, "tenants.globex.gateway.kind", "pg_simulator");
    assert_error(
        &found,
        "tenants.globex.gateway.breaker.failure_rate",
        "(0, 1]",
    );
    assert_error(
        &found,
        "tenants.globex.gateway.breaker.half_open_calls",
        "at least 1",
    );
    assert_error(&found, "tenants.globex.gateway.retries.max", "more than 10");
    assert_error(
        &found,
        "tenants.globex.gateway.retries.min_delay_ms",
        "max_delay_ms",
    );
    assert_error(&found, "tenants.initech.gateway.kind", "`stripe`");

    let unknown = errors(
        r#"
tenants:
  acme:
    gateway: { kind: toss, base_url: "https://pg", secret_env: K, timeout: 5 }
"#,
    );
    assert!(unknown.to_string().contains("timeout"), "{unknown}");
}

#[test]
fn a_kafka_section_resolves_with_the_relay_defaults() {
    let config = parse(
        r#"
kafka:
  brokers: 127.0.0.1:9092
  client: { compression.type: none }
  client_secret_env: { sasl.password: KAFKA_PASSWORD }
tenants: { acme: {} }
"#,
    )
    .unwrap();
    let kafka = config.kafka.unwrap();
    assert_eq!(
        kafka.topic("acme", "credit.deducted"),
        "fluxpay.credit.deducted"
    );
    assert_eq!(kafka.batch, 500);
    assert_eq!(kafka.delivery_timeout, std::time::Duration::from_secs(5));
    assert_eq!(kafka.lease, std::time::Duration::from_secs(15));
    assert_eq!(kafka.client["compression.type"], "none");
    assert_eq!(kafka.client_secret_env["sasl.password"], "KAFKA_PASSWORD");
    assert!(kafka.create_topics.is_none());
    // Without the section nothing goes to Kafka.
    assert!(parse("tenants: { acme: {} }\n").unwrap().kafka.is_none());
    // A tenant placeholder makes per-tenant topics.
    let per_tenant = parse(
        "kafka: { brokers: b:9092, topic_template: \"events.{tenant}.{type}\", batch: 10000,\n  create_topics: { partitions: 6, replication: 3 } }\ntenants: { acme: {} }\n",
    )
    .unwrap()
    .kafka
    .unwrap();
    assert_eq!(
        per_tenant.topic("acme", "order.paid"),
        "events.acme.order.paid"
    );
    assert_eq!(per_tenant.batch, 10_000);
}

#[test]
fn kafka_mistakes_name_their_key() {
    let found = errors(
        r#"
kafka:
  brokers: " "
  topic_template: "fluxpay events/{tenant}"
  batch: 10001
  delivery_timeout_ms: 99
  lease_ms: 500
  create_topics: { partitions: 0, replication: 17 }
  client: { enable.idempotence: "false", sasl.password: hunter2 }
tenants: { acme: {} }
"#,
    );
    assert_error(&found, "kafka.brokers", "at least one");
    assert_error(&found, "kafka.topic_template", "{type}");
    assert_error(&found, "kafka.batch", "1..=10000");
    assert_error(&found, "kafka.delivery_timeout_ms", "100..=900000");
    assert_error(&found, "kafka.lease_ms", "1000..=300000");
    // A lease a round could outlast would let two hosts publish at once.
    assert_error(
        &errors(
            "kafka: { brokers: b:9092, delivery_timeout_ms: 5000, lease_ms: 14999 }\n\
             tenants: { acme: {} }\n",
        ),
        "kafka.lease_ms",
        "three times delivery_timeout_ms",
    );
    assert!(
        parse("kafka: { brokers: b:9092, delivery_timeout_ms: 5000, lease_ms: 15000 }\ntenants: { acme: {} }\n")
            .is_ok()
    );
    assert_error(&found, "kafka.create_topics.partitions", "1..=10000");
    assert_error(&found, "kafka.create_topics.replication", "1..=16");
    assert_error(
        &found,
        "kafka.client.enable.idempotence",
        "set by the relay",
    );
    assert_error(&found, "kafka.client.sasl.password", "client_secret_env");
    let dlq = errors(
        "kafka: { brokers: b:9092, dlq_topic_template: \"fluxpay.{type}\", max_attempts: 0 }\n\
         tenants: { acme: { events: { order: sideways } } }\n",
    );
    assert_error(
        &dlq,
        "kafka.dlq_topic_template",
        "differ from topic_template",
    );
    assert_error(&dlq, "kafka.max_attempts", "1..=10");
    assert_error(
        &dlq,
        "tenants.acme.events.order",
        "strict (the default) or available",
    );
    let illegal = errors(
        "kafka: { brokers: b:9092, topic_template: \"fluxpay/{type}\" }\ntenants: { acme: {} }\n",
    );
    assert_error(&illegal, "kafka.topic_template", "a-z A-Z 0-9");
}

#[test]
fn a_webhook_resolves_with_its_defaults_and_every_mistake_names_its_field() {
    let config = parse(
        "tenants:\n  acme:\n    events:\n      webhook: { url: \"https://hooks.acme.example/in\", \
         secret_env: ACME_HOOK }\n",
    )
    .unwrap();
    let hook = config.tenants["acme"].api.webhook.clone().unwrap();
    assert_eq!(hook.url.as_str(), "https://hooks.acme.example/in");
    assert_eq!(hook.secret_env, "ACME_HOOK");
    assert_eq!(
        (
            hook.timeout.as_secs(),
            hook.backoff.as_secs(),
            hook.max_backoff.as_secs()
        ),
        (10, 10, 3600)
    );
    assert_eq!((hook.max_attempts, hook.concurrency), (12, 8));
    assert_eq!(config.webhooks, config::WebhooksConfig::default());
    assert_eq!(config.webhooks.lease.as_secs(), 60);

    let bad = errors(
        "webhooks: { lease_ms: 999, batch: 10001 }\ntenants:\n  acme:\n    events:\n      \
         webhook: { url: \"http://hooks.acme.example/in\", secret_env: whsec_inline, \
         concurrency: 0 }\n",
    );
    assert_error(&bad, "webhooks.lease_ms", "1000..=300000");
    assert_error(&bad, "webhooks.batch", "1..=10000");
    assert_error(&bad, "tenants.acme.events.webhook.url", "must be https://");
    assert_error(
        &bad,
        "tenants.acme.events.webhook.secret_env",
        "never the secret",
    );
    assert_error(&bad, "tenants.acme.events.webhook.concurrency", "1..=64");

    // A delivery must end inside a third of the lease.
    let slow = errors(
        "webhooks: { lease_ms: 30000 }\ntenants:\n  acme:\n    events:\n      webhook: { url: \
         \"https://h.example/\", secret_env: ACME_HOOK, timeout_ms: 10001 }\n",
    );
    assert_error(
        &slow,
        "tenants.acme.events.webhook.timeout_ms",
        "more than a third of webhooks.lease_ms",
    );
    let unknown = errors(
        "tenants:\n  acme:\n    events:\n      webhook: { url: \"https://h.example/\", \
         secret_env: A, retries: 3 }\n",
    );
    assert!(unknown.to_string().contains("retries"), "{unknown}");
}

#[test]
fn a_webhook_secret_comes_from_the_environment_in_the_standard_format() {
    let config = parse(
        "tenants:\n  acme:\n    dev: true\n    events:\n      webhook: { url: \
         \"https://h.example/\", secret_env: ACME_HOOK }\n",
    )
    .unwrap();
    let directory = |value: Option<&str>| {
        let value = value.map(str::to_owned);
        fluxpay_host::app::TenantDirectory::from_config(&config, &move |name| {
            (name == "ACME_HOOK").then(|| value.clone()).flatten()
        })
    };
    let missing = directory(None).unwrap_err();
    assert_error(
        &missing,
        "tenants.acme.events.webhook.secret_env",
        "ACME_HOOK is not set",
    );
    let short = directory(Some("whsec_c2hvcnQ=")).unwrap_err();
    assert_error(
        &short,
        "tenants.acme.events.webhook.secret_env",
        "24 to 64 random bytes",
    );
    let tenants = directory(Some("whsec_Zmx1eHBheS10ZXN0LXdlYmhvb2stc2VjcmV0LTMyYiE=")).unwrap();
    assert!(tenants.get("acme").unwrap().webhook.is_some());

    // While rotating, the previous secret must be there too.
    let rotating = parse(
        "tenants:\n  acme:\n    dev: true\n    events:\n      webhook: { url: \
         \"https://h.example/\", secret_env: ACME_HOOK, previous_secret_env: ACME_HOOK_OLD }\n",
    )
    .unwrap();
    let missing_old = fluxpay_host::app::TenantDirectory::from_config(&rotating, &|name| {
        (name == "ACME_HOOK").then(|| "whsec_Zmx1eHBheS10ZXN0LXdlYmhvb2stc2VjcmV0LTMyYiE=".into())
    })
    .unwrap_err();
    assert_error(
        &missing_old,
        "tenants.acme.events.webhook.previous_secret_env",
        "ACME_HOOK_OLD is not set",
    );
}
