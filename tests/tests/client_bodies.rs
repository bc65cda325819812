//! A real agent driven with the exact bodies Consul's clients send: the Go `api` package's
//! `Agent().ServiceRegister` with its defaults (`"Check": null, "Checks": null`, which
//! `consul services register -name=web` sends), a client library's check with a numeric
//! interval (nanoseconds), Consul's field aliases, and the Connect-only fields kept and
//! returned through anti-entropy.

use std::time::Duration;

use muster_tests::*;
use serde_json::{json, Value};

async fn put_json(a: &Agent, path: &str, body: &Value) -> anyhow::Result<Resp> {
    put(&a.url(path), body.to_string().as_bytes()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn consul_clients_bodies_register_services_and_checks() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "bodies", &["-enable-script-checks"]).await?;

    // Go's api.AgentServiceRegistration{Name: "web"}, as encoding/json writes it.
    let r = put(
        &a.url("/v1/agent/service/register"),
        br#"{"Name":"web","Check":null,"Checks":null}"#,
    )
    .await?;
    assert_eq!((r.status, r.text()), (200, String::new()));
    let s = get(&a.url("/v1/agent/service/web")).await?.json();
    assert_eq!((&s["ID"], &s["Service"]), (&json!("web"), &json!("web")));

    // py-consul's `Check.script(["/bin/true"], 10)`: a number is nanoseconds, and Consul's
    // 1 s minimum makes it a check that runs every second.
    let r = put_json(
        &a,
        "/v1/agent/check/register",
        &json!({"name": "true-script", "args": ["/bin/true"], "interval": 10}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_until("script check passing", Duration::from_secs(10), || async {
        let c = get(&a.url("/v1/agent/checks")).await.ok()?.json();
        (c["true-script"]["Status"] == "passing").then_some(())
    })
    .await?;

    // `serviceid` in a check and `EnableTagOverride` in a service, as clients spell them.
    let r = put_json(
        &a,
        "/v1/agent/check/register",
        &json!({"name": "web-ttl", "ttl": "1h", "serviceid": "web", "status": "passing"}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put_json(
        &a,
        "/v1/agent/service/register",
        &json!({"Name": "tagged", "EnableTagOverride": true, "Weights": null, "Meta": null,
            "Check": {"CheckID": "tagged-ttl", "TTL": 3_600_000_000_000u64,
                "DeregisterCriticalServiceAfter": null}}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let checks = get(&a.url("/v1/agent/checks")).await?.json();
    assert_eq!(checks["web-ttl"]["ServiceID"], "web");
    assert_eq!(checks["tagged-ttl"]["ServiceID"], "tagged");
    let tagged = get(&a.url("/v1/agent/service/tagged")).await?.json();
    assert_eq!(tagged["EnableTagOverride"], true);

    // Connect-only fields: kept with the service, returned by the agent and, once
    // anti-entropy has pushed it, by the catalog.
    let proxy = json!({"DestinationServiceName": "web", "LocalServicePort": 8080});
    let r = put_json(
        &a,
        "/v1/agent/service/register",
        &json!({"Name": "web-sidecar-proxy", "ID": "web-proxy", "Kind": "connect-proxy",
            "Port": 21000, "Proxy": proxy, "Meta": {"v": "1"}}),
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let s = get(&a.url("/v1/agent/service/web-proxy")).await?.json();
    assert_eq!(
        (&s["Kind"], &s["Proxy"], &s["Meta"]),
        (&json!("connect-proxy"), &proxy, &json!({"v": "1"}))
    );
    let entry = wait_until("proxy in the catalog", Duration::from_secs(10), || async {
        let c = get(&a.url("/v1/catalog/service/web-sidecar-proxy"))
            .await
            .ok()?
            .json();
        c.as_array()?.first().cloned()
    })
    .await?;
    assert_eq!(
        (
            &entry["ServiceKind"],
            &entry["ServiceProxy"],
            &entry["ServiceMeta"]
        ),
        (&json!("connect-proxy"), &proxy, &json!({"v": "1"}))
    );
    Ok(())
}
