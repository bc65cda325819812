//! Loading config files and flags: known and unsupported keys, HCL blocks, refusals.

use super::*;
use crate::flags;

fn load_with(json: &str, extra: &[&str]) -> std::result::Result<(Config, Vec<String>), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("a.json");
    std::fs::write(&f, json).expect("write");
    let mut args = vec!["-config-file".to_string(), f.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = flags::parse(&args, AGENT_FLAGS)?;
    load(&p).map_err(|e| e.to_string().replace(&f.display().to_string(), "FILE"))
}

#[test]
fn honours_known_keys_and_warns_on_unsupported() {
    let (c, w) = load_with(
        r#"{"server": true, "bootstrap_expect": 3, "data_dir": "/d", "node_name": "n1",
            "ports": {"http": -1, "dns": 8653, "grpc": 8502}, "retry_join": ["a"],
            "performance": {"raft_multiplier": 1, "rpc_hold_timeout": "3s"},
            "telemetry": {"disable_hostname": true, "prometheus_retention_time": "60s",
                          "metrics_prefix": "muster", "statsd_address": "127.0.0.1:8125",
                          "circonus_api_token": "t", "prefix_filter": ["+consul.raft"]}}"#,
        &["-retry-join", "b", "-node=n2"],
    )
    .expect("loads");
    assert!(c.server);
    assert_eq!(c.bootstrap_expect, 3);
    assert_eq!(c.http_port, -1);
    assert_eq!(c.dns_port, 8653);
    assert_eq!(c.retry_join, ["a", "b"]);
    assert_eq!(c.node_name, "n2", "flags override files");
    assert_eq!(c.rpc_hold_timeout, std::time::Duration::from_secs(3));
    assert!(c.telemetry.disable_hostname);
    assert_eq!(c.telemetry.prefix, "muster");
    assert_eq!(
        c.telemetry.prometheus_retention,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(c.telemetry.sinks.statsd.as_deref(), Some("127.0.0.1:8125"));
    assert_eq!(
        c.telemetry.filter.rules,
        [("consul.raft".to_string(), true)]
    );
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("performance.raft_multiplier, ports.grpc, telemetry.circonus_api_token"),
        "{}",
        w[0]
    );
}

#[test]
fn settings_muster_already_obeys_are_taken_quietly() {
    let quiet = r#"{"datacenter": "DC1", "primary_datacenter": "dc1", "data_dir": "/d",
                    "disable_update_check": true, "disable_anonymous_signature": false}"#;
    let (c, w) = load_with(quiet, &[]).expect("loads");
    assert_eq!(c.primary_datacenter.as_deref(), Some("dc1"));
    assert_eq!(w, Vec::<String>::new());

    let other = r#"{"primary_datacenter": "east", "data_dir": "/d"}"#;
    let (_, w) = load_with(other, &[]).expect("loads");
    assert_eq!(
        w,
        [
            "primary_datacenter \"east\" is not this agent's datacenter \"dc1\": Muster runs a \
          single datacenter, so it is ignored"
        ]
    );
    let bad = r#"{"disable_update_check": "yes", "data_dir": "/d"}"#;
    assert_eq!(
        load_with(bad, &[]).map(|_| ()),
        Err("config file FILE: key \"disable_update_check\": expected a boolean".to_string())
    );
}

#[test]
fn telemetry_sinks_and_filters_are_checked() {
    let bad = |t: &str| {
        let e = load_with(&format!(r#"{{"data_dir": "/d", "telemetry": {t}}}"#), &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("telemetry."), "{t}: {e}");
        e
    };
    assert!(bad(r#"{"statsd_address": "localhost"}"#).contains("host:port"));
    assert!(bad(r#"{"prefix_filter": ["consul.raft"]}"#).contains("+ or -"));
    assert!(bad(r#"{"blocked_prefixes": [1]}"#).contains("list of strings"));
    let (c, _) = load_with(
        r#"{"data_dir": "/d",
            "telemetry": {"filter_default": false, "allowed_prefixes": "consul.kvs",
                          "prefix_filter": ["-consul.kvs.apply"]}}"#,
        &[],
    )
    .expect("loads");
    let f = &c.telemetry.filter;
    assert!(f.allows("consul.kvs.x") && !f.allows("consul.kvs.apply") && !f.allows("consul.raft"));
}

#[test]
fn reads_consul_hcl_with_repeated_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("agent.hcl");
    std::fs::write(
        &f,
        r#"
datacenter = "east"
retry_join = ["10.0.0.1", "10.0.0.2"]
ports {
  dns  = 8653
  grpc = -1
}
dns_config {
  only_passing = true
  service_ttl  = { "*" = "5s" }
}
service {
  name = "web"
  port = 80
  check {
id       = "web-http"
http     = "http://localhost/health"
interval = "10s"
  }
  check {
id  = "web-ttl"
ttl = "30s"
  }
}
service {
  name   = "db"
  checks = [{ ttl = "30s" }]
}
"#,
    )
    .expect("write");
    let args = [
        "-config-dir",
        &dir.path().display().to_string(),
        "-data-dir",
        "/tmp",
    ]
    .map(String::from);
    let p = flags::parse(&args, AGENT_FLAGS).expect("flags");
    let (c, warnings) = load(&p).expect("load");
    assert_eq!(c.datacenter, "east");
    assert_eq!(c.retry_join, ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(c.dns_port, 8653);
    assert!(c.dns.only_passing);
    assert_eq!(c.dns.service_ttl.get("*"), Some(&5));
    assert!(
        warnings.iter().any(|w| w.contains("ports.grpc")),
        "{warnings:?}"
    );
    // Repeated blocks: two services, the first with two checks.
    let names: Vec<&str> = c.services.iter().map(|s| s.service.name.as_str()).collect();
    assert_eq!(names, ["web", "db"]);
    assert_eq!(c.services[0].checks.len(), 2);
    assert_eq!(c.services[1].checks.len(), 1);

    // A syntax error names the file and the line.
    std::fs::write(&f, "datacenter = \"east\"\nports {\n  dns = \n}\n").expect("write");
    let e = load(&p).expect_err("broken HCL").to_string();
    assert!(
        e.starts_with(&format!("config file {}: invalid HCL", f.display())) && e.contains("line 3"),
        "{e}"
    );
}

#[test]
fn refuses_unknown_keys_naming_file_and_key() {
    let e = load_with(r#"{"data_dir": "/d", "sever": true}"#, &[]).unwrap_err();
    assert_eq!(e, "config file FILE: unknown key \"sever\"");
    let e = load_with(r#"{"data_dir": "/d", "ports": {"htp": 1}}"#, &[]).unwrap_err();
    assert_eq!(e, "config file FILE: unknown key \"ports.htp\"");
    let e = load_with(r#"{"data_dir": 5}"#, &[]).unwrap_err();
    assert_eq!(e, "config file FILE: key \"data_dir\": expected a string");
    let e = load_with(r#"{"tombstone_ttl": "soon"}"#, &[]).unwrap_err();
    assert_eq!(
        e,
        "config file FILE: key \"tombstone_ttl\": invalid duration"
    );
}

#[test]
fn dns_use_cache_and_its_max_age_are_read() {
    let (c, w) = load_with(
        r#"{"data_dir": "/d", "dns_config": {"use_cache": true, "cache_max_age": "5s"}}"#,
        &[],
    )
    .expect("loads");
    assert!(c.dns.use_cache);
    assert_eq!(c.dns.cache_max_age, std::time::Duration::from_secs(5));
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn rpc_hold_timeout_must_be_a_sane_duration() {
    for (v, why) in [("\"0s\"", "must be between"), ("7", "expected a duration")] {
        let json = format!(r#"{{"performance": {{"rpc_hold_timeout": {v}}}}}"#);
        let e = load_with(&json, &[]).unwrap_err();
        assert!(
            e.starts_with("config file FILE: key \"performance.rpc_hold_timeout\": ")
                && e.contains(why),
            "{e}"
        );
    }
}

#[test]
fn tombstone_ttl_is_a_duration() {
    let (c, _) = load_with(r#"{"data_dir": "/d", "tombstone_ttl": "90s"}"#, &[]).expect("loads");
    assert_eq!(c.tombstone_ttl, std::time::Duration::from_secs(90));
    let (c, _) = load_with(r#"{"data_dir": "/d"}"#, &[]).expect("loads");
    assert_eq!(c.tombstone_ttl, std::time::Duration::from_secs(15 * 60));
}

#[test]
fn node_meta_from_files_and_flags() {
    let (c, w) = load_with(
        r#"{"data_dir": "/d", "node_meta": {"rack": "r1", "env": "prod"},
            "advertise_addr_wan": "192.0.2.7"}"#,
        &["-node-meta", "env:dev", "-node-meta=zone:z:1"],
    )
    .expect("loads");
    assert!(w.is_empty(), "node_meta is supported now: {w:?}");
    assert_eq!(c.node_meta["rack"], "r1");
    assert_eq!(c.node_meta["env"], "dev", "flags override files");
    assert_eq!(c.node_meta["zone"], "z:1");
    assert_eq!(c.node_tagged_addresses()["wan"], "192.0.2.7");
    let err = load_with(r#"{"data_dir": "/d", "node_meta": {"consul-x": "1"}}"#, &[])
        .expect_err("reserved prefix");
    assert!(err.contains("reserved"), "{err}");
    let err = load_with(r#"{"data_dir": "/d", "node_meta": {"n": 1}}"#, &[]).expect_err("number");
    assert!(err.contains("node_meta"), "{err}");
}

#[test]
fn coordinate_keys_are_consuls() {
    let (c, w) = load_with(r#"{"data_dir": "/d"}"#, &[]).expect("loads");
    assert_eq!(
        c.sync_coordinate_interval_min,
        std::time::Duration::from_secs(15)
    );
    assert_eq!(c.sync_coordinate_rate_target, 64.0);
    assert!(w.is_empty());
    let (c, w) = load_with(
        r#"{"data_dir": "/d", "sync_coordinate_interval_min": "500ms",
            "sync_coordinate_rate_target": 8.5}"#,
        &[],
    )
    .expect("loads");
    assert_eq!(
        c.sync_coordinate_interval_min,
        std::time::Duration::from_millis(500)
    );
    assert_eq!(c.sync_coordinate_rate_target, 8.5);
    assert!(w.is_empty(), "{w:?}");
    let (c, w) = load_with(
        r#"{"data_dir": "/d", "consul": {"coordinate": {"update_period": "250ms"}}}"#,
        &[],
    )
    .expect("loads");
    assert_eq!(
        c.coordinate_update_period,
        std::time::Duration::from_millis(250)
    );
    assert!(w.is_empty(), "{w:?}");
    let e = load_with(
        r#"{"data_dir": "/d", "sync_coordinate_rate_target": 0}"#,
        &[],
    )
    .expect_err("refused");
    assert!(e.contains("expected a positive number"), "{e}");
}

#[test]
fn gossip_encryption_keys_are_checked() {
    let key = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
    let (c, _) = load_with(
        &format!(r#"{{"data_dir": "/d", "encrypt": "{key}", "encrypt_verify_incoming": false}}"#),
        &[],
    )
    .expect("loads");
    assert_eq!(c.encrypt.as_deref(), Some(key));
    assert!(!c.encrypt_verify_incoming);
    assert!(c.encrypt_verify_outgoing, "defaults to true");
    let e = load_with(r#"{"data_dir": "/d"}"#, &["-encrypt", "c2hvcnQ="]).unwrap_err();
    assert!(
        e.contains("encrypt has invalid key: key size must be 16, 24 or 32"),
        "{e}"
    );
    let e = load_with(r#"{"data_dir": "/d", "encrypt": "!!"}"#, &[]).unwrap_err();
    assert!(e.contains("encrypt has invalid key"), "{e}");
}

#[test]
fn event_handlers_from_files_and_flags() {
    let (c, _) = load_with(
        r#"{"data_dir": "/d", "event_handlers": ["member-join=a.sh", "b.sh"],
            "event_handler_timeout": "2s"}"#,
        &["-event-handler", "member-failed,user:deploy=c.sh"],
    )
    .expect("loads");
    let scripts: Vec<&str> = c.event_handlers.iter().map(|h| h.script.as_str()).collect();
    assert_eq!(scripts, ["a.sh", "b.sh", "c.sh"]);
    assert_eq!(c.event_handler_timeout, std::time::Duration::from_secs(2));
    let e = load_with(r#"{"event_handlers": ["member-joined=a.sh"]}"#, &[]).unwrap_err();
    assert!(
        e.contains("FILE") && e.contains("event_handlers") && e.contains("member-joined"),
        "{e}"
    );
    let e = load_with(r#"{"data_dir": "/d"}"#, &["-event-handler", "bogus=x"]).unwrap_err();
    assert!(e.contains("-event-handler") && e.contains("bogus"), "{e}");
}
