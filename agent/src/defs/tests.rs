//! The definition parser: both spellings, Consul's aliases, nulls, numeric durations, the
//! kept Connect fields, and the errors.

use super::fields::snake;
use super::*;

fn ctx() -> Ctx<'static> {
    Ctx {
        origin: "web.json",
        warnings: Vec::new(),
        consul_errors: false,
    }
}

#[test]
fn snake_cases_consul_names() {
    for (a, b) in [
        ("ServiceID", "service_id"),
        ("TLSSkipVerify", "tls_skip_verify"),
        ("HTTP", "http"),
        ("TTL", "ttl"),
        (
            "DeregisterCriticalServiceAfter",
            "deregister_critical_service_after",
        ),
        ("ID", "id"),
        ("args", "args"),
        ("enable_tag_override", "enable_tag_override"),
        ("CheckID", "check_id"),
    ] {
        assert_eq!(snake(a), b);
    }
}

#[test]
fn parses_both_spellings_alike() {
    let file = serde_json::json!({"id": "redis1", "name": "redis", "tags": ["master"], "port": 6379,
        "weights": {"passing": 10, "warning": 1},
        "check": {"args": ["/bin/true"], "interval": "10s", "timeout": "2s"}});
    let http = serde_json::json!({"ID": "redis1", "Name": "redis", "Tags": ["master"], "Port": 6379,
        "Weights": {"Passing": 10, "Warning": 1},
        "Check": {"Args": ["/bin/true"], "Interval": "10s", "Timeout": "2s"}});
    let a = parse_service(&mut ctx(), &file).expect("file form");
    let b = parse_service(&mut ctx(), &http).expect("http form");
    assert_eq!(a, b);
    assert_eq!(a.checks[0].id, "service:redis1");
    assert_eq!(a.checks[0].spec.timeout, Duration::from_secs(2));
    assert_eq!(a.service.weight_passing, 10);
    assert!(a.checks[0].is_script);
}

#[test]
fn unknown_and_unsupported_fields() {
    let mut c = ctx();
    let v = serde_json::json!({"name": "web", "token": "t", "namespace": "default"});
    parse_service(&mut c, &v).expect("loads");
    assert_eq!(
        c.warnings,
        ["web.json: ignoring service fields Muster does not support yet: namespace, token"]
    );
    let e = parse_service(&mut ctx(), &serde_json::json!({"name": "web", "prot": 80}))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "web.json: unknown service field \"prot\"");
    let e = parse_service(
        &mut ctx(),
        &serde_json::json!({"name": "web", "port": "80"}),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "web.json: field \"port\": expected a non-negative number"
    );
    let e = parse_service(
        &mut ctx(),
        &serde_json::json!({"name": "w", "check": {"http": "http://x", "interval": "soon"}}),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "web.json: field \"interval\": invalid duration \"soon\" (e.g. \"10s\", \"5m\", or a \
         number of nanoseconds; at most 2562047h)"
    );
    let check = |interval: &str| {
        let mut c = ctx();
        let v = serde_json::json!({"name": "w", "check": {"tcp": "x:1", "interval": interval}});
        parse_service(&mut c, &v).map(|d| (d.checks[0].spec.interval, c.warnings))
    };
    let e = check("1000000000000h").unwrap_err().to_string();
    assert!(e.contains("invalid duration \"1000000000000h\""), "{e}");
    let e = check("0s").unwrap_err().to_string();
    assert!(e.contains("\"interval\": must be > 0"), "{e}");
    let (i, w) = check("100ms").expect("clamped");
    assert_eq!(i, Duration::from_secs(1));
    assert!(w[0].contains("below the minimum of 1s; using 1s"), "{w:?}");
    let e = parse_service(
        &mut ctx(),
        &serde_json::json!({"name": "w", "check": {"tcp": "x:1"}}),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "web.json: field \"interval\": required for script, http and tcp checks"
    );
    let e = parse_service(&mut ctx(), &serde_json::json!({"port": 1}))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "web.json: field \"name\": required");
}

/// What Consul's Go `api` client sends for `Agent().ServiceRegister` with only a name: the
/// check fields are `null`. Any other optional field may be `null` too.
#[test]
fn null_is_the_same_as_absent() {
    let go = serde_json::json!({"Name": "web", "Check": null, "Checks": null});
    let d = parse_service(&mut ctx(), &go).expect("go client's body");
    assert_eq!((d.service.id.as_str(), d.checks.len()), ("web", 0));
    let all_null = serde_json::json!({
        "Name": "web", "ID": null, "Tags": null, "Address": null, "Port": null, "Meta": null,
        "Weights": null, "EnableTagOverride": null, "Kind": null, "Proxy": null,
        "Connect": null, "TaggedAddresses": null, "SocketPath": null, "Token": null,
        "Checks": [null, {"TTL": "10s", "Status": null, "Interval": null, "Header": null,
                          "DeregisterCriticalServiceAfter": null, "ServiceID": null}],
    });
    let mut c = ctx();
    let d = parse_service(&mut c, &all_null).expect("nulls");
    assert_eq!(
        d.service,
        parse_service(&mut ctx(), &go).expect("same").service
    );
    assert_eq!(d.checks.len(), 1);
    assert_eq!(d.checks[0].status, HealthStatus::Critical);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // A check with only zero values is none, as Consul's decoder leaves it empty.
    for empty in [
        serde_json::json!({}),
        serde_json::json!({"CheckID": "", "TTL": null}),
    ] {
        let v = serde_json::json!({"Name": "web", "Check": empty});
        assert!(parse_service(&mut ctx(), &v)
            .expect("empty check")
            .checks
            .is_empty());
    }
    let w = serde_json::json!({"Name": "w", "Weights": {"Passing": null, "Warning": 3}});
    let d = parse_service(&mut ctx(), &w).expect("null weight");
    assert_eq!((d.service.weight_passing, d.service.weight_warning), (1, 3));
    // An unknown field is refused whatever its value, as Consul's decoder does.
    let e = parse_service(&mut ctx(), &serde_json::json!({"Name": "w", "Bogus": null}))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "web.json: unknown service field \"Bogus\"");
}

/// Durations are Go strings or numbers of nanoseconds, then Consul's 1 s interval minimum
/// applies: a client library's `Check.script("/bin/true", 10)` runs every second.
#[test]
fn durations_may_be_nanoseconds() {
    let mut c = ctx();
    let v = serde_json::json!({"name": "w", "check": {"args": ["/bin/true"], "interval": 10}});
    let d = parse_service(&mut c, &v).expect("numeric interval");
    assert_eq!(d.checks[0].spec.interval, Duration::from_secs(1));
    assert!(
        c.warnings[0].contains("below the minimum of 1s"),
        "{:?}",
        c.warnings
    );
    let v = serde_json::json!({"Name": "c", "TTL": 30_000_000_000u64, "Timeout": 2.5e9,
        "DeregisterCriticalServiceAfter": 90_000_000_000u64});
    let d = parse_check(&mut ctx(), &v, None, None).expect("numeric ttl");
    assert_eq!(
        d.spec.probe,
        Probe::Ttl {
            ttl: Duration::from_secs(30)
        }
    );
    assert_eq!(d.spec.timeout, Duration::from_millis(2500));
    assert_eq!(d.deregister_after, Some(Duration::from_secs(90)));
    let v = serde_json::json!({"Name": "c", "HTTP": "http://x", "Interval": 5_000_000_000u64});
    let d = parse_check(&mut ctx(), &v, None, None).expect("numeric interval");
    assert_eq!(d.spec.interval, Duration::from_secs(5));
    let e = parse_check(
        &mut ctx(),
        &serde_json::json!({"Name": "c", "TCP": "x:1", "Interval": true}),
        None,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("\"interval\": expected a duration"), "{e}");
}

/// Field names match in any case, with or without underscores, as Consul's decoder and its
/// aliases take them.
#[test]
fn field_names_in_any_case_and_consul_aliases() {
    let spellings = [
        serde_json::json!({"Name": "c", "TTL": "10s", "ServiceID": "web1"}),
        serde_json::json!({"name": "c", "ttl": "10s", "serviceid": "web1"}),
        serde_json::json!({"name": "c", "ttl": "10s", "service_id": "web1"}),
        serde_json::json!({"NAME": "c", "Ttl": "10s", "SERVICE_ID": "web1"}),
    ];
    for v in &spellings {
        let d = parse_check(&mut ctx(), v, None, None).expect("check");
        assert_eq!(
            (d.name.as_str(), d.service_id.as_str()),
            ("c", "web1"),
            "{v}"
        );
    }
    for v in [
        serde_json::json!({"Name": "s", "EnableTagOverride": true}),
        serde_json::json!({"name": "s", "enabletagoverride": true}),
        serde_json::json!({"name": "s", "enable_tag_override": true}),
    ] {
        let d = parse_service(&mut ctx(), &v).expect("service");
        assert!(d.service.enable_tag_override, "{v}");
    }
    let v = serde_json::json!({"Name": "c", "HTTP": "http://x", "Interval": "10s",
        "TLSSkipVerify": true, "tls_server_name": "x", "DockerContainerID": "", "GRPCUseTLS": false,
        "OutputMaxSize": 4096, "Body": "", "DisableRedirects": true, "FailuresBeforeWarning": 1,
        "FailuresBeforeCritical": 2, "SuccessBeforePassing": 1, "Namespace": "default"});
    let mut c = ctx();
    parse_check(&mut c, &v, None, None).expect("every field of Consul's check");
    assert_eq!(c.warnings.len(), 1, "one warning names what does nothing");
}

/// Consul's Connect-only fields, tagged addresses and socket path are kept with the service,
/// apart from its own meta.
#[test]
fn connect_fields_are_kept() {
    let v = serde_json::json!({"Name": "web", "Meta": {"v": "1"}, "Kind": "connect-proxy",
        "Proxy": {"DestinationServiceName": "web", "Upstreams": []},
        "Connect": {"Native": true},
        "tagged_addresses": {"wan": {"address": "198.51.100.1", "port": 80}},
        "SocketPath": "/run/web.sock"});
    let mut c = ctx();
    let d = parse_service(&mut c, &v).expect("kept");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(d.service.meta["v"], "1");
    let extra: serde_json::Value =
        serde_json::from_str(&d.service.meta[Service::EXTRA_META_KEY]).expect("json");
    assert_eq!(
        extra,
        serde_json::json!({"Kind": "connect-proxy",
            "Proxy": {"DestinationServiceName": "web", "Upstreams": []},
            "Connect": {"Native": true},
            "TaggedAddresses": {"wan": {"Address": "198.51.100.1", "Port": 80}},
            "SocketPath": "/run/web.sock"})
    );
    let plain = parse_service(&mut ctx(), &serde_json::json!({"Name": "web"})).expect("plain");
    assert!(plain.service.meta.is_empty());
    let mut v = serde_json::json!({"Name": "web", "Meta": {}});
    v["Meta"][Service::EXTRA_META_KEY] = "{}".into();
    let e = parse_service(&mut ctx(), &v).unwrap_err().to_string();
    assert!(e.contains("reserved for internal use"), "{e}");
    let e = parse_service(
        &mut ctx(),
        &serde_json::json!({"Name": "web", "Proxy": "x"}),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "web.json: field \"proxy\": expected an object");
}

/// Over HTTP, errors are worded as Consul's API words them.
#[test]
fn consul_errors_read_as_consuls() {
    let http = || Ctx {
        origin: "service definition",
        warnings: Vec::new(),
        consul_errors: true,
    };
    let service = |v: serde_json::Value| parse_service(&mut http(), &v).unwrap_err().to_string();
    let check = |v: serde_json::Value| {
        parse_check(&mut http(), &v, None, None)
            .unwrap_err()
            .to_string()
    };
    for (got, want) in [
        (
            service(serde_json::json!({"Name": "x", "Bogus": 1})),
            r#"Request decode failed: json: unknown field "Bogus""#,
        ),
        (
            service(serde_json::json!({"Name": "x", "Port": "80"})),
            "Request decode failed: json: cannot unmarshal string into Go struct field .Port of \
             type int",
        ),
        (
            service(serde_json::json!({"Name": "x", "Tags": "a,b"})),
            "Request decode failed: json: cannot unmarshal string into Go struct field .Tags of \
             type []string",
        ),
        (
            service(serde_json::json!({"ID": "anon", "Port": 1})),
            "Missing service name",
        ),
        (
            service(serde_json::json!({"Name": "b", "Check": {"Name": "nothing to run"}})),
            "Invalid check: TTL must be > 0 for TTL checks",
        ),
        (
            service(serde_json::json!({"Name": "b", "Check": {"Args": ["true"]}})),
            "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks",
        ),
        (
            service(serde_json::json!({"Name": "b", "Check": {"TTL": "forever"}})),
            r#"Request decode failed: time: invalid duration "forever""#,
        ),
        (
            check(serde_json::json!({"TTL": "1h"})),
            "Missing check name",
        ),
        (
            check(serde_json::json!({"Name": "odd", "TTL": "1h", "Status": "sideways"})),
            "Bad check status",
        ),
    ] {
        assert_eq!(got, want);
    }
}
