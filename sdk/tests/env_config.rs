//! `TracerProviderBuilder::from_env_with` and `BatchConfig::from_env_with`: every
//! OpenTelemetry SDK variable they read, invalid values (reported, default kept,
//! never a panic) and the rule that values set in code win, before or after
//! `from_env`. The variables come from a map, never the process environment.

use std::time::Duration;

use tracewire::export::{BatchConfig, InMemoryExporter};
use tracewire::trace::{AlwaysOff, Resource};
use tracewire::TracerProviderBuilder;
use tracewire::{
    KeyValue, SpanContext, SpanId, TraceFlags, TraceId, TraceState, TracerProvider, Value,
};

use tracewire::env::lookup_in as env;

fn from_env(vars: &[(&str, &str)]) -> TracerProviderBuilder {
    TracerProvider::builder().from_env_with(env(vars))
}

fn service_name(builder: TracerProviderBuilder) -> String {
    builder.build().resource().service_name.to_string()
}

fn attributes(provider: &TracerProvider) -> Vec<(String, String)> {
    provider
        .resource()
        .attributes
        .iter()
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

#[test]
fn without_variables_the_defaults_hold() {
    let provider = from_env(&[]).build();
    assert_eq!(provider.resource(), &Resource::default());
    assert!(provider.is_enabled());
    assert_eq!(BatchConfig::from_env_with(env(&[])), BatchConfig::default());
}

#[test]
fn otel_service_name_names_the_service() {
    assert_eq!(
        service_name(from_env(&[("OTEL_SERVICE_NAME", "checkout")])),
        "checkout"
    );
    assert_eq!(
        service_name(from_env(&[("OTEL_SERVICE_NAME", "  ")])),
        "unknown_service"
    );
}

#[test]
fn service_name_in_resource_attributes_is_used_and_otel_service_name_overrides_it() {
    let attrs = ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,team=a");
    let provider = from_env(&[attrs]).build();
    assert_eq!(provider.resource().service_name, "from-attrs");
    // service.name is the resource's service name, not one more attribute.
    assert_eq!(attributes(&provider), [("team".into(), "a".into())]);
    assert_eq!(
        service_name(from_env(&[attrs, ("OTEL_SERVICE_NAME", "from-name")])),
        "from-name"
    );
}

#[test]
fn a_service_name_set_in_code_wins_before_or_after_from_env() {
    let vars = [("OTEL_SERVICE_NAME", "from-env")];
    let before = TracerProvider::builder()
        .with_service_name("from-code")
        .from_env_with(env(&vars));
    let after = from_env(&vars).with_service_name("from-code");
    let resource = from_env(&vars).with_resource(Resource::new("from-resource"));
    assert_eq!(service_name(before), "from-code");
    assert_eq!(service_name(after), "from-code");
    assert_eq!(service_name(resource), "from-resource");
}

#[test]
fn the_fallback_service_name_applies_only_when_nothing_else_names_the_service() {
    let fallback = |vars: &[(&str, &str)]| {
        service_name(
            TracerProvider::builder()
                .with_fallback_service_name("fallback")
                .from_env_with(env(vars)),
        )
    };
    assert_eq!(fallback(&[]), "fallback");
    assert_eq!(fallback(&[("OTEL_SERVICE_NAME", "env")]), "env");
    assert_eq!(
        fallback(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=attrs")]),
        "attrs"
    );
    assert_eq!(
        service_name(
            TracerProvider::builder()
                .with_service_name("code")
                .with_fallback_service_name("fallback")
        ),
        "code"
    );
}

#[test]
fn resource_attributes_are_percent_decoded_key_value_pairs() {
    for (value, expected) in [
        ("a=1", vec![("a", "1")]),
        (" a = 1 , b=2 ", vec![("a", "1"), ("b", "2")]),
        (
            "deployment.environment=prod%20eu,note=a%2Cb%3Dc",
            vec![("deployment.environment", "prod eu"), ("note", "a,b=c")],
        ),
        ("k%C3%A9y=%E2%9C%93", vec![("kéy", "✓")]),
        ("a=1,a=2", vec![("a", "2")]),
        ("a=", vec![("a", "")]),
        ("a=1,,b=2", vec![("a", "1"), ("b", "2")]),
    ] {
        let provider = from_env(&[("OTEL_RESOURCE_ATTRIBUTES", value)]).build();
        let expected: Vec<(String, String)> = expected
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(attributes(&provider), expected, "{value:?}");
    }
}

#[test]
fn malformed_resource_attributes_are_discarded_whole() {
    for value in ["a=1,b", "a=1,=2", "a=%zz", "a=100%", "a=%ff"] {
        let provider = from_env(&[
            ("OTEL_RESOURCE_ATTRIBUTES", value),
            ("OTEL_SERVICE_NAME", "svc"),
        ])
        .build();
        assert_eq!(attributes(&provider), [], "{value:?}");
        assert_eq!(provider.resource().service_name, "svc");
    }
}

#[test]
fn resource_attributes_set_in_code_win_per_key() {
    let resource = Resource::new("svc")
        .with_attribute(KeyValue::new("team", "code"))
        .with_attribute(KeyValue::new("build", 7));
    for builder in [
        from_env(&[("OTEL_RESOURCE_ATTRIBUTES", "team=env,region=eu")])
            .with_resource(resource.clone()),
        TracerProvider::builder()
            .with_resource(resource.clone())
            .from_env_with(env(&[("OTEL_RESOURCE_ATTRIBUTES", "team=env,region=eu")])),
    ] {
        let provider = builder.build();
        let attrs = &provider.resource().attributes;
        assert_eq!(attrs.len(), 3, "{attrs:?}");
        assert_eq!(attrs[0], KeyValue::new("team", "code"));
        assert_eq!(attrs[1].value, Value::I64(7));
        assert_eq!(attrs[2], KeyValue::new("region", "eu"));
    }
}

/// Whether a root span, a child of a sampled remote parent and a child of an
/// unsampled remote parent are sampled.
fn decisions(builder: TracerProviderBuilder) -> (bool, bool, bool) {
    let provider = builder.build();
    let tracer = provider.tracer("test");
    let remote = |flags| {
        SpanContext::new(
            TraceId::from_u128(0x4bf92f3577b34da6a3ce929d0e0e4736),
            SpanId::from_u64(0x00f067aa0ba902b7),
            flags,
            true,
            TraceState::NONE,
        )
    };
    let sampled = |parent: Option<SpanContext>| {
        let builder = tracer.span_builder("s").root();
        let span = match parent {
            Some(p) => builder.with_parent_span_context(p).start(),
            None => builder.start(),
        };
        span.span_context().is_sampled()
    };
    (
        sampled(None),
        sampled(Some(remote(TraceFlags::SAMPLED))),
        sampled(Some(remote(TraceFlags::NONE))),
    )
}

#[test]
fn each_sampler_name_chooses_its_sampler() {
    let t = true;
    let f = false;
    for (sampler, arg, expected) in [
        ("always_on", None, (t, t, t)),
        ("always_off", None, (f, f, f)),
        ("traceidratio", Some("0"), (f, f, f)),
        ("traceidratio", Some("1"), (t, t, t)),
        ("traceidratio", None, (t, t, t)),
        ("parentbased_always_on", None, (t, t, f)),
        ("parentbased_always_off", None, (f, t, f)),
        ("parentbased_traceidratio", Some("0.0"), (f, t, f)),
        ("parentbased_traceidratio", None, (t, t, f)),
        ("ALWAYS_OFF", None, (f, f, f)),
        // The argument of a sampler that takes none is ignored.
        ("always_off", Some("1"), (f, f, f)),
    ] {
        let mut vars = vec![("OTEL_TRACES_SAMPLER", sampler)];
        vars.extend(arg.map(|a| ("OTEL_TRACES_SAMPLER_ARG", a)));
        assert_eq!(decisions(from_env(&vars)), expected, "{sampler} {arg:?}");
    }
}

#[test]
fn a_ratio_argument_is_read_as_a_fraction() {
    let provider = from_env(&[
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
    ])
    .build();
    assert!(
        format!("{provider:?}").contains("ratio: 0.25"),
        "{provider:?}"
    );
}

#[test]
fn an_invalid_ratio_is_reported_and_the_ratio_is_one() {
    for arg in ["abc", "1.5", "-0.1", "NaN", "0,5"] {
        let vars = [
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", arg),
        ];
        let provider = from_env(&vars).build();
        assert!(format!("{provider:?}").contains("ratio: 1.0"), "{arg:?}");
        assert_eq!(decisions(from_env(&vars)), (true, true, true), "{arg:?}");
    }
}

#[test]
fn an_unknown_sampler_is_reported_and_the_default_is_kept() {
    for sampler in ["jaeger_remote", "xray", "sometimes"] {
        let vars = [("OTEL_TRACES_SAMPLER", sampler)];
        assert_eq!(decisions(from_env(&vars)), (true, true, false), "{sampler}");
    }
}

#[test]
fn a_sampler_set_in_code_wins_before_or_after_from_env() {
    let vars = [("OTEL_TRACES_SAMPLER", "always_on")];
    let before = TracerProvider::builder()
        .with_sampler(AlwaysOff)
        .from_env_with(env(&vars));
    let after = from_env(&vars).with_sampler(AlwaysOff);
    assert_eq!(decisions(before), (false, false, false));
    assert_eq!(decisions(after), (false, false, false));
}

#[test]
fn otel_sdk_disabled_builds_a_provider_that_records_nothing() {
    let exporter = InMemoryExporter::new();
    let provider = from_env(&[("OTEL_SDK_DISABLED", "TRUE")])
        .with_simple_exporter(exporter.clone())
        .build();
    assert!(!provider.is_enabled());
    provider.set_enabled(true);
    assert!(!provider.is_enabled(), "the environment disabled the SDK");
    let span = provider.tracer("t").start("s");
    assert!(!span.is_recording());
    span.end();
    assert!(exporter.spans().is_empty());
    assert_eq!(provider.stats().started, 0);
    provider.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn otel_sdk_disabled_other_than_true_leaves_the_sdk_enabled() {
    for value in ["false", "0", "1", "yes", ""] {
        let provider = from_env(&[("OTEL_SDK_DISABLED", value)]).build();
        assert!(provider.is_enabled(), "{value:?}");
    }
}

#[test]
fn each_bsp_variable_sets_its_batch_setting() {
    let d = BatchConfig::default();
    for (name, value, expected) in [
        (
            "OTEL_BSP_SCHEDULE_DELAY",
            "250",
            BatchConfig {
                scheduled_delay: Duration::from_millis(250),
                ..d
            },
        ),
        (
            "OTEL_BSP_EXPORT_TIMEOUT",
            "1500",
            BatchConfig {
                export_timeout: Duration::from_millis(1500),
                ..d
            },
        ),
        (
            "OTEL_BSP_MAX_QUEUE_SIZE",
            "4096",
            BatchConfig {
                queue_capacity: 4096,
                ..d
            },
        ),
        (
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            "128",
            BatchConfig {
                max_batch_size: 128,
                ..d
            },
        ),
    ] {
        assert_eq!(
            BatchConfig::from_env_with(env(&[(name, value)])),
            expected,
            "{name}"
        );
    }
}

#[test]
fn invalid_bsp_values_are_reported_and_keep_the_defaults() {
    for name in [
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_EXPORT_TIMEOUT",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    ] {
        for value in ["0", "-1", "1.5", "5s", "lots", "99999999999999999999999"] {
            assert_eq!(
                BatchConfig::from_env_with(env(&[(name, value)])),
                BatchConfig::default(),
                "{name}={value}"
            );
        }
    }
}

#[test]
fn a_batch_larger_than_the_queue_is_cut_to_the_queue() {
    let config = BatchConfig::from_env_with(env(&[
        ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "512"),
    ]));
    assert_eq!((config.queue_capacity, config.max_batch_size), (100, 100));
}

#[test]
fn bsp_variables_configure_batch_exporters_added_before_or_after_from_env() {
    let vars = [("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "7")];
    let before = TracerProvider::builder()
        .with_batch_exporter(InMemoryExporter::new())
        .from_env_with(env(&vars))
        .build();
    let after = from_env(&vars)
        .with_batch_exporter(InMemoryExporter::new())
        .build();
    for provider in [before, after] {
        assert!(
            format!("{provider:?}").contains("max_batch_size: 7"),
            "{provider:?}"
        );
    }
}

#[test]
fn a_batch_config_given_in_code_wins_over_bsp_variables() {
    let config = BatchConfig {
        max_batch_size: 3,
        ..BatchConfig::default()
    };
    let provider = from_env(&[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "7")])
        .with_batch_exporter_config(InMemoryExporter::new(), config)
        .build();
    let debug = format!("{provider:?}");
    assert!(debug.contains("max_batch_size: 3"), "{debug}");
}

#[test]
fn spans_of_a_provider_from_env_reach_its_exporter_under_the_env_service_name() {
    let exporter = InMemoryExporter::new();
    let provider = from_env(&[
        ("OTEL_SERVICE_NAME", "orders"),
        ("OTEL_BSP_SCHEDULE_DELAY", "10"),
    ])
    .with_batch_exporter(exporter.clone())
    .build();
    provider.tracer("t").start("s").end();
    provider.shutdown(Duration::from_secs(5)).unwrap();
    assert_eq!(exporter.spans().len(), 1);
    assert_eq!(exporter.resource().unwrap().service_name, "orders");
}
