//! What Consul's clients read from a real agent, answered as Consul 1.10 answers it:
//! `/v1/agent/self` (what `consul info` prints), members' fields and tags, the node's tagged
//! addresses and `-node-meta`, the agent's own services and checks, `?hash` blocking, and the
//! operations that succeed when there is nothing to do.

use std::time::{Duration, Instant};

use muster_tests::*;
use serde_json::{json, Value};

async fn put_json(a: &Agent, path: &str, v: Value) -> anyhow::Result<Resp> {
    put(&a.url(path), v.to_string().as_bytes()).await
}

#[tokio::test]
async fn agent_self_members_and_node_meta_read_as_consuls() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "s1", &["-node-meta", "rack:r1"]).await?;

    let v = get(&a.url("/v1/agent/self")).await?.json();
    assert_eq!(v["Config"]["Version"], "1.10.9", "the Consul API version");
    assert_eq!(v["Config"]["NodeName"], "s1");
    assert_eq!(v["Config"]["Server"], true);
    for section in ["agent", "raft", "serf_lan", "runtime", "build", "consul"] {
        let s = v["Stats"][section].as_object();
        assert!(
            s.is_some_and(|s| s.values().all(Value::is_string)),
            "{section}: {v}"
        );
    }
    assert_eq!(v["Stats"]["consul"]["server"], "true");
    assert_eq!(v["Stats"]["consul"]["leader"], "true");
    assert_eq!(v["Stats"]["raft"]["state"], "Leader");
    assert_eq!(v["Stats"]["serf_lan"]["members"], "1");
    assert_eq!(v["Stats"]["build"]["version"], "1.10.9");
    assert!(v["Stats"]["build"]["muster_version"].is_string());
    assert_eq!(
        v["Meta"],
        json!({"consul-network-segment": "", "rack": "r1"})
    );
    assert_eq!(v["Coord"]["Vec"].as_array().map(Vec::len), Some(8));
    assert!(v["DebugConfig"].is_object() && v["xDS"].is_object());
    let me = &v["Member"];
    for (k, want) in [
        ("ProtocolMin", 1),
        ("ProtocolMax", 5),
        ("ProtocolCur", 2),
        ("DelegateMin", 2),
        ("DelegateMax", 5),
        ("DelegateCur", 4),
    ] {
        assert_eq!(me[k], want, "{k}");
    }

    let members = get(&a.url("/v1/agent/members")).await?.json();
    let tags = &members[0]["Tags"];
    for (k, want) in [
        ("role", "consul"),
        ("dc", "dc1"),
        ("acls", "0"),
        ("vsn", "2"),
        ("vsn_min", "2"),
        ("vsn_max", "3"),
        ("raft_vsn", "3"),
        ("segment", ""),
    ] {
        assert_eq!(tags[k], want, "tag {k}: {tags}");
    }
    assert!(tags["build"]
        .as_str()
        .is_some_and(|b| b.starts_with("1.10.9:")));
    assert!(
        tags.get("raft_id").is_none(),
        "Muster's own tags stay internal"
    );
    let wan = get(&a.url("/v1/agent/members?wan=1")).await?.json();
    assert_eq!(wan[0]["Name"], "s1.dc1");

    // `-node-meta` and the tagged addresses reach the catalog, where `?node-meta` finds them.
    let nodes = wait_until(
        "node meta in the catalog",
        Duration::from_secs(10),
        || async {
            let v = get(&a.url("/v1/catalog/nodes?node-meta=rack:r1"))
                .await
                .ok()?
                .json();
            (v.as_array()?.len() == 1).then_some(v)
        },
    )
    .await?;
    let addr = me["Addr"].as_str().unwrap_or_default();
    for k in ["lan", "lan_ipv4", "wan", "wan_ipv4"] {
        assert_eq!(nodes[0]["TaggedAddresses"][k], addr, "{k}");
    }
    assert_eq!(nodes[0]["Meta"]["consul-network-segment"], "");
    let none = get(&a.url("/v1/catalog/nodes?node-meta=rack:r2"))
        .await?
        .json();
    assert_eq!(none, json!([]));
    // The server's `consul` service carries the versions Consul's leader registers.
    let consul = wait_until(
        "the consul service's meta",
        Duration::from_secs(10),
        || async {
            let v = get(&a.url("/v1/catalog/service/consul")).await.ok()?.json();
            let meta = v.get(0)?.get("ServiceMeta")?.clone();
            meta.get("version").is_some().then_some(meta)
        },
    )
    .await?;
    assert_eq!(consul["version"], "1.10.9");
    assert_eq!(consul["raft_version"], "3");
    assert_eq!(consul["serf_protocol_current"], "2");
    Ok(())
}

#[tokio::test]
async fn own_services_and_checks_read_as_consuls() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "s1", &["-enable-script-checks"]).await?;
    let web = json!({"ID": "web1", "Name": "web", "Address": "127.0.0.1", "Port": 8080,
        "Tags": ["v1"], "Check": {"CheckID": "web1-ttl", "TTL": "1h"},
        "TaggedAddresses": {"wan": {"Address": "198.51.100.10", "Port": 80}}});
    assert_eq!(
        put_json(&a, "/v1/agent/service/register", web.clone())
            .await?
            .status,
        200
    );
    for check in [
        json!({"Name": "node-ttl", "TTL": "1h"}),
        json!({"ID": "disk", "Name": "disk", "Args": ["true"], "Interval": "1h",
               "Timeout": "2s"}),
    ] {
        let r = put_json(&a, "/v1/agent/check/register", check).await?;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    let services = get(&a.url("/v1/agent/services")).await?.json();
    let w = &services["web1"];
    assert_eq!(w["Datacenter"], "dc1");
    assert_eq!(
        w["TaggedAddresses"]["lan_ipv4"],
        json!({"Address": "127.0.0.1", "Port": 8080})
    );
    assert_eq!(
        w["TaggedAddresses"]["wan"],
        json!({"Address": "198.51.100.10", "Port": 80}),
        "the registered ones beside the derived ones"
    );
    assert_eq!(w["Meta"], json!({}), "no reserved key shows");
    assert!(w.get("CreateIndex").is_none() && w.get("ContentHash").is_none());

    let checks = get(&a.url("/v1/agent/checks")).await?.json();
    let c = &checks["web1-ttl"];
    assert_eq!((&c["Type"], &c["Interval"]), (&json!("ttl"), &json!("")));
    assert_eq!(c["ServiceTags"], json!(["v1"]));
    assert_eq!(c["Definition"], json!({}));
    let c = &checks["node-ttl"];
    assert_eq!((&c["Type"], &c["Interval"]), (&json!("ttl"), &json!("0s")));
    let c = &checks["disk"];
    assert_eq!(c["Type"], "script");
    assert_eq!(
        (&c["Interval"], &c["Timeout"]),
        (&json!("1h0m0s"), &json!("2s"))
    );

    // `?hash`: the service's ContentHash, and a query that blocks until it changes.
    let r = get(&a.url("/v1/agent/service/web1")).await?;
    let hash = r.header("x-consul-contenthash").unwrap_or_default();
    assert!(!hash.is_empty());
    assert_eq!(r.json()["ContentHash"], hash.as_str());
    let t = Instant::now();
    let r = get(&a.url(&format!("/v1/agent/service/web1?hash={hash}&wait=1s"))).await?;
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "blocked the full wait"
    );
    assert_eq!(
        r.header("x-consul-contenthash").as_deref(),
        Some(hash.as_str())
    );
    let changed = {
        let mut web = web.clone();
        web["Tags"] = json!(["v2"]);
        web
    };
    let url = a.url(&format!("/v1/agent/service/web1?hash={hash}&wait=30s"));
    let blocked = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    put_json(&a, "/v1/agent/service/register", changed).await?;
    let r = blocked.await??;
    assert!(t.elapsed() < Duration::from_secs(5), "woken by the change");
    assert_ne!(
        r.header("x-consul-contenthash").as_deref(),
        Some(hash.as_str())
    );
    assert_eq!(r.json()["Tags"], json!(["v2"]));

    // The agent's health endpoints: text format, and Consul's not-found answers.
    let r = get(&a.url("/v1/agent/health/service/id/web1?format=text")).await?;
    assert_eq!((r.status, r.text().as_str()), (503, "critical"));
    assert_eq!(r.header("content-type").as_deref(), Some("text/plain"));
    let r = get(&a.url("/v1/agent/health/service/id/ghost")).await?;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["Service"], Value::Null);
    let r = get(&a.url("/v1/agent/health/service/id/ghost?format=text")).await?;
    assert_eq!(
        (r.status, r.json()),
        (404, json!("ServiceId ghost not found"))
    );
    let r = get(&a.url("/v1/agent/health/service/name/ghost")).await?;
    assert_eq!((r.status, r.json()), (404, json!([])));
    Ok(())
}

#[tokio::test]
async fn doing_nothing_succeeds_as_in_consul() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "s1", &[]).await?;
    for path in [
        "/v1/agent/service/deregister/ghost",
        "/v1/agent/check/deregister/ghost",
    ] {
        let r = put(&a.url(path), b"").await?;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    // Joining the agent's own gossip address.
    let me = get(&a.url("/v1/agent/self")).await?.json();
    let own = format!(
        "{}:{}",
        me["Member"]["Addr"].as_str().unwrap_or(""),
        me["Member"]["Port"]
    );
    let t = Instant::now();
    let r = put(&a.url(&format!("/v1/agent/join/{own}")), b"").await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(2), "answered at once");
    // The root answers 200 with what it is (Consul without its UI does too), so an HTTP
    // check or a load balancer probing `/` finds the agent up, with ACLs on or off.
    let r = get(&a.url("/")).await?;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("/v1/"), "{}", r.text());
    assert_eq!(get(&a.url("/nope")).await?.status, 404);
    // An unknown node in the catalog: `null`, not an error, so `catalog services -node` works.
    let r = get(&a.url("/v1/catalog/node/ghost")).await?;
    assert_eq!((r.status, r.json()), (200, Value::Null));
    Ok(())
}

/// What later Consul versions added to the 1.10 API, answered as they answer it, so that
/// clients written against them (py-consul 1.8's own suite among them) work.
#[tokio::test]
async fn later_consul_reads_usage_filters_peers_and_releases() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "s1", &[]).await?;
    for (node, addr, tags) in [
        ("n1", "10.1.10.31", json!(["prod"])),
        ("n2", "10.1.10.32", json!(["staging"])),
    ] {
        let reg = json!({"Node": node, "Address": addr,
            "Service": {"Service": "web", "Tags": tags, "Port": 80}});
        let r = put_json(&a, "/v1/catalog/register", reg).await?;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let proxy = json!({"Node": "n1", "Address": "10.1.10.31",
        "Service": {"Service": "web-sidecar-proxy", "Kind": "connect-proxy", "Port": 21000,
            "Proxy": {"DestinationServiceName": "web"}}});
    assert_eq!(
        put_json(&a, "/v1/catalog/register", proxy).await?.status,
        200
    );

    // `/v1/catalog/services?filter=` (1.14) judges each instance; the map holds the names
    // and tags of those that pass.
    let q = "/v1/catalog/services?filter=%22prod%22%20in%20ServiceTags";
    let r = get(&a.url(q)).await?;
    assert_eq!((r.status, r.json()), (200, json!({"web": ["prod"]})));
    assert!(r.header("X-Consul-Index").is_some());
    let q = "/v1/catalog/services?filter=Node%20%3D%3D%20%22n2%22";
    assert_eq!(get(&a.url(q)).await?.json(), json!({"web": ["staging"]}));
    let r = get(&a.url("/v1/catalog/services?filter=Bogus%20%3D%3D%20%22x%22")).await?;
    assert_eq!(r.status, 400, "{}", r.text());

    // `/v1/catalog/node/<node>?filter=` judges each of the node's services.
    let q = "/v1/catalog/node/n1?filter=Service%20%3D%3D%20%22web%22";
    let services = get(&a.url(q)).await?.json()["Services"].clone();
    assert_eq!(services.as_object().map(|m| m.len()), Some(1), "{services}");
    assert_eq!(services["web"]["Service"], "web");
    let q = "/v1/catalog/node/n1?filter=Service%20%3D%3D%20%22nope%22";
    assert_eq!(get(&a.url(q)).await?.json()["Services"], json!({}));

    // `?peer=` (1.13): Muster peers with no cluster, so a named peer has no instances.
    for path in ["/v1/health/service/web", "/v1/catalog/service/web"] {
        let own = get(&a.url(path)).await?.json();
        assert_eq!(own.as_array().map(Vec::len), Some(2), "{path}");
        let peered = get(&a.url(&format!("{path}?peer=elsewhere"))).await?;
        assert_eq!((peered.status, peered.json()), (200, json!([])), "{path}");
    }

    // `/v1/operator/usage` (1.11): the catalog's counts, the server's `consul` service and
    // the proxy not billed.
    let u = wait_until("consul registered", Duration::from_secs(10), || async {
        let u = get(&a.url("/v1/operator/usage")).await.ok()?.json();
        (u["Usage"]["dc1"]["Services"] == 3).then_some(u)
    })
    .await?;
    let dc = &u["Usage"]["dc1"];
    assert_eq!(dc["ServiceInstances"], 4, "{u}");
    assert_eq!(dc["BillableServiceInstances"], 2, "{u}");
    assert_eq!(dc["ConnectServiceInstances"]["connect-proxy"], 1, "{u}");
    assert_eq!(dc["ConnectServiceInstances"]["mesh-gateway"], 0, "{u}");
    assert_eq!(dc["Nodes"], 3, "{u}");
    assert_eq!(u["KnownLeader"], true);
    assert_eq!(u["ConsistencyLevel"], "leader");
    let stale = get(&a.url("/v1/operator/usage?global&stale")).await?.json();
    assert_eq!(stale["ConsistencyLevel"], "stale");
    assert_eq!(stale["Usage"]["dc1"]["Nodes"], 3);

    // A service's `Locality` (1.17) is kept and shown, its keys in Consul's case, by the
    // agent, the catalog and health; a catalog registration may carry one too.
    let svc = json!({"Name": "near", "Port": 1, "Locality": {"region": "us-west-1", "Zone": "a"}});
    let r = put_json(&a, "/v1/agent/service/register", svc).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let want = json!({"Region": "us-west-1", "Zone": "a"});
    let own = get(&a.url("/v1/agent/services")).await?.json();
    assert_eq!(own["near"]["Locality"], want, "{own}");
    assert!(own["web-sidecar-proxy"].get("Locality").is_none());
    let listed = wait_until("near in the catalog", Duration::from_secs(10), || async {
        let v = get(&a.url("/v1/catalog/service/near")).await.ok()?.json();
        (v.as_array()?.len() == 1).then_some(v)
    })
    .await?;
    assert_eq!(listed[0]["ServiceLocality"], want);
    let health = get(&a.url("/v1/health/service/near")).await?.json();
    assert_eq!(health[0]["Service"]["Locality"], want);
    let reg = json!({"Node": "n2", "Address": "10.1.10.32",
        "Service": {"Service": "far", "Locality": {"Region": "eu-1"}}});
    assert_eq!(put_json(&a, "/v1/catalog/register", reg).await?.status, 200);
    let far = get(&a.url("/v1/catalog/service/far")).await?.json();
    assert_eq!(far[0]["ServiceLocality"], json!({"Region": "eu-1"}));

    // A lock release by a string that is no session ID is `false`, as for any session that
    // does not hold the lock; an acquire by one is still refused.
    assert_eq!(put(&a.url("/v1/kv/lk"), b"1").await?.text(), "true");
    let r = put(&a.url("/v1/kv/lk?release=foo"), b"1").await?;
    assert_eq!((r.status, r.text()), (200, "false".to_string()));
    let r = put(&a.url("/v1/kv/lk?acquire=foo"), b"1").await?;
    assert_eq!(r.status, 400, "{}", r.text());
    // Reading no key is Consul 1.10's 400 too (a listing or the keys need `?recurse`/`?keys`).
    let r = get(&a.url("/v1/kv/")).await?;
    assert_eq!((r.status, r.text()), (400, "Missing key name".to_string()));
    assert_eq!(get(&a.url("/v1/kv/?recurse")).await?.status, 200);
    Ok(())
}
