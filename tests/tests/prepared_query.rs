//! Prepared queries against a real `muster agent -dev`: `/v1/query` CRUD and Consul's
//! errors, execute and explain (tags, only-passing, limit, templates), a query deleted with
//! its session, and `<query>.query.consul` over real UDP and TCP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use muster_tests::*;
use serde_json::{json, Value};

async fn dev_agent(root: &std::path::Path, name: &str) -> anyhow::Result<Agent> {
    let a = Agent::start(name, &root.join(name), &["-dev"])?;
    wait_until("leader", Duration::from_secs(20), || leader_of(&a)).await?;
    Ok(a)
}

async fn post(a: &Agent, path: &str, body: &Value) -> Resp {
    let body = body.to_string().into_bytes();
    req(reqwest::Method::POST, &a.url(path), Some(body))
        .await
        .expect("post")
}

/// Creates a query; its ID.
async fn create(a: &Agent, def: Value) -> String {
    let r = post(a, "/v1/query", &def).await;
    assert_eq!(r.status, 200, "{def}: {}", r.text());
    r.json()["ID"].as_str().expect("ID").to_string()
}

async fn register(a: &Agent, v: Value) {
    let r = put(&a.url("/v1/catalog/register"), v.to_string().as_bytes())
        .await
        .expect("register");
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The nodes an execution returned, sorted.
fn nodes(r: &Resp) -> Vec<String> {
    let mut n: Vec<String> = r.json()["Nodes"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|e| e["Node"]["Node"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn crud_with_consuls_answers_and_errors() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = dev_agent(root.path(), "pq1").await?;

    let id = create(&a, json!({"Name": "web-q", "Service": {"Service": "web", "Tags": ["v1"]}, "DNS": {"TTL": "10s"}})).await;
    let list = get(&a.url("/v1/query")).await?;
    assert_eq!(list.status, 200);
    assert!(list.header("x-consul-index").is_some());
    assert_eq!(
        list.header("x-consul-effective-consistency").as_deref(),
        Some("leader")
    );
    let q = &list.json()[0];
    assert_eq!(q["ID"], id.as_str());
    assert_eq!(q["Name"], "web-q");
    assert_eq!(
        q["Template"],
        json!({"Type": "", "Regexp": "", "RemoveEmptyTags": false})
    );
    assert_eq!(q["Service"]["Service"], "web");
    assert_eq!(q["Service"]["Tags"], json!(["v1"]));
    assert_eq!(
        q["Service"]["Failover"],
        json!({"NearestN": 0, "Datacenters": null})
    );
    assert_eq!(q["Service"]["Connect"], json!({"Enabled": false}));
    assert_eq!(q["DNS"], json!({"TTL": "10s"}));
    let created = q["CreateIndex"].as_u64().expect("CreateIndex");
    assert_eq!(q["ModifyIndex"].as_u64(), Some(created));

    // Field names in any case, null for defaults, unknown fields ignored (Go's decoder).
    let other = create(&a, json!({"name": "other", "service": {"service": "db", "tags": null, "OnlyPassing": null}, "Whatever": 1})).await;

    // Consul's texts; a 400, where Consul answers 500 (README, "Compatibility").
    let cases = [
        (
            json!({"Name": "WEB-Q", "Service": {"Service": "x"}}),
            400,
            "name 'WEB-Q' aliases an existing query name",
        ),
        (
            json!({"Name": "n", "Service": {}}),
            400,
            "Invalid prepared query: Must provide a Service name to query",
        ),
        (
            json!({"Service": {"Service": "x"}}),
            400,
            "Invalid prepared query: Must be bound to a session",
        ),
        (
            json!({"ID": id, "Name": "n", "Service": {"Service": "x"}}),
            400,
            "ID must be empty when creating a new prepared query",
        ),
        (
            json!({"Name": "t", "Template": {"Type": "prefix"}, "Service": {"Service": "x"}}),
            400,
            "failed compiling template: Bad Template.Type 'prefix'",
        ),
        (
            json!({"Name": "n", "Service": {"Service": "x"}, "DNS": {"TTL": "soon"}}),
            400,
            "Invalid prepared query: Bad DNS TTL 'soon': time: invalid duration \"soon\"",
        ),
        (
            json!({"Name": "n", "Session": "8f246b77-f3e1-ff88-5b48-8ec93abf3e05", "Service": {"Service": "x"}}),
            400,
            "invalid session \"8f246b77-f3e1-ff88-5b48-8ec93abf3e05\"",
        ),
    ];
    for (body, status, text) in cases {
        let r = post(&a, "/v1/query", &body).await;
        assert_eq!((r.status, r.text().as_str()), (status, text), "{body}");
    }
    let r = post(&a, "/v1/query", &json!({"Name": "t", "Template": {"Type": "name_prefix_match", "Regexp": "("}, "Service": {"Service": "x"}})).await;
    assert_eq!(r.status, 400);
    assert!(
        r.text()
            .starts_with("failed compiling template: Bad Regexp: "),
        "{}",
        r.text()
    );
    let r = req(reqwest::Method::POST, &a.url("/v1/query"), Some(Vec::new())).await?;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Request decode failed: EOF")
    );

    // Read one; unknown IDs as Consul answers them.
    let one = get(&a.url(&format!("/v1/query/{id}"))).await?;
    assert_eq!(one.json().as_array().map(Vec::len), Some(1));
    let unknown = "0f246b77-f3e1-ff88-5b48-8ec93abf3e05";
    let r = get(&a.url(&format!("/v1/query/{unknown}"))).await?;
    assert_eq!((r.status, r.text().as_str()), (404, "Query not found"));
    let r = get(&a.url(&format!("/v1/query/{unknown}/execute"))).await?;
    assert_eq!((r.status, r.text().as_str()), (404, "Query not found"));
    let r = put(&a.url(&format!("/v1/query/{unknown}")), b"{}").await?;
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            format!("Cannot modify non-existent prepared query: '{unknown}'")
        )
    );

    // A blocking list wakes on an update, which replaces the whole definition.
    let index = get(&a.url("/v1/query"))
        .await?
        .header("x-consul-index")
        .unwrap_or_default();
    let url = a.url(&format!("/v1/query?index={index}&wait=20s"));
    let blocked = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!blocked.is_finished(), "list did not block");
    let body = json!({"Name": "web-q", "Service": {"Service": "web2"}});
    let r = put(
        &a.url(&format!("/v1/query/{id}")),
        body.to_string().as_bytes(),
    )
    .await?;
    assert_eq!((r.status, r.text().as_str()), (200, ""));
    let woke = tokio::time::timeout(Duration::from_secs(10), blocked).await???;
    let q = woke.json()[0].clone();
    let q = if q["ID"] == id.as_str() {
        q
    } else {
        woke.json()[1].clone()
    };
    assert_eq!(q["Service"]["Service"], "web2");
    assert_eq!(q["Service"]["Tags"], Value::Null);
    assert!(q["ModifyIndex"].as_u64() > Some(created));
    assert_eq!(q["CreateIndex"].as_u64(), Some(created));

    // Delete.
    for qid in [&id, &other] {
        let r = req(
            reqwest::Method::DELETE,
            &a.url(&format!("/v1/query/{qid}")),
            None,
        )
        .await?;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(get(&a.url(&format!("/v1/query/{id}"))).await?.status, 404);
    assert_eq!(get(&a.url("/v1/query")).await?.json(), json!([]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_filters_templates_sessions_and_dns() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = dev_agent(root.path(), "pq2").await?;
    let instance = |node: &str, ip: &str, tags: Value, status: &str| {
        json!({"Node": node, "Address": ip, "Service": {"Service": "db", "Tags": tags, "Port": 5432},
            "Check": {"CheckID": "db", "ServiceID": "db", "Status": status}})
    };
    register(
        &a,
        instance("n1", "10.0.0.1", json!(["primary"]), "passing"),
    )
    .await;
    register(
        &a,
        instance("n2", "10.0.0.2", json!(["primary", "canary"]), "passing"),
    )
    .await;
    register(
        &a,
        instance("n3", "10.0.0.3", json!(["Primary"]), "warning"),
    )
    .await;
    register(
        &a,
        instance("n4", "10.0.0.4", json!(["primary"]), "critical"),
    )
    .await;
    register(
        &a,
        instance("n5", "10.0.0.5", json!(["replica"]), "passing"),
    )
    .await;

    let id = create(&a, json!({"Name": "db-primary", "Service": {"Service": "db", "Tags": ["primary", "!canary"]}, "DNS": {"TTL": "7s"}})).await;
    let r = get(&a.url(&format!("/v1/query/{id}/execute"))).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(nodes(&r), ["n1", "n3"], "critical and !canary dropped");
    let out = r.json();
    assert_eq!(out["Service"], "db");
    assert_eq!(out["DNS"], json!({"TTL": "7s"}));
    assert_eq!(
        (out["Datacenter"].as_str(), out["Failovers"].as_u64()),
        (Some("dc1"), Some(0))
    );
    assert_eq!(out["Nodes"][0]["Service"]["Port"], 5432);
    assert!(out["Nodes"][0]["Checks"]
        .as_array()
        .is_some_and(|c| !c.is_empty()));

    // By name, case-insensitively; ?limit; ?near and ?connect accepted.
    let r = get(&a.url("/v1/query/DB-PRIMARY/execute?limit=1&near=_agent")).await?;
    assert_eq!(r.json()["Nodes"].as_array().map(Vec::len), Some(1));
    let r = get(&a.url("/v1/query/db-primary/execute?connect=true")).await?;
    assert_eq!((r.status, r.json()["Nodes"].clone()), (200, json!([])));
    let r = get(&a.url("/v1/query/db-primary/execute?limit=x")).await?;
    assert_eq!(r.status, 400);

    // OnlyPassing also drops warnings.
    let r = put(&a.url(&format!("/v1/query/{id}")), json!({"Name": "db-primary", "Service": {"Service": "db", "Tags": ["primary", "!canary"], "OnlyPassing": true}, "DNS": {"TTL": "7s"}}).to_string().as_bytes()).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(&a.url("/v1/query/db-primary/execute")).await?;
    assert_eq!(nodes(&r), ["n1"]);

    // A template: the longest prefix wins, its regexp fills the service's tags.
    create(&a, json!({"Name": "", "Template": {"Type": "name_prefix_match"}, "Service": {"Service": "${name.full}"}})).await;
    create(&a, json!({"Name": "tier-", "Template": {"Type": "name_prefix_match", "Regexp": "^tier-(.+)$", "RemoveEmptyTags": true},
        "Service": {"Service": "db", "Tags": ["${match(1)}", "${match(7)}"]}})).await;
    let r = get(&a.url("/v1/query/tier-replica/execute")).await?;
    assert_eq!(
        (r.status, nodes(&r)),
        (200, vec!["n5".to_string()]),
        "{}",
        r.text()
    );
    let r = get(&a.url("/v1/query/tier-replica/explain")).await?;
    assert_eq!(r.json()["Query"]["Service"]["Tags"], json!(["replica"]));
    assert_eq!(r.json()["Query"]["Name"], "tier-");
    let r = get(&a.url("/v1/query/db/execute")).await?;
    assert_eq!(
        nodes(&r),
        ["n1", "n2", "n3", "n5"],
        "the catch-all template"
    );

    // A query bound to a session goes when the session does.
    let session = wait_until("a session", Duration::from_secs(10), || async {
        let r = put(&a.url("/v1/session/create"), b"{}").await.ok()?;
        r.json()["ID"].as_str().map(str::to_string)
    })
    .await?;
    let bound = create(
        &a,
        json!({"Session": session, "Service": {"Service": "db"}}),
    )
    .await;
    assert_eq!(
        get(&a.url(&format!("/v1/query/{bound}"))).await?.status,
        200
    );
    put(&a.url(&format!("/v1/session/destroy/{session}")), b"").await?;
    let r = get(&a.url(&format!("/v1/query/{bound}"))).await?;
    assert_eq!((r.status, r.text().as_str()), (404, "Query not found"));

    // DNS: A and SRV for the query's name, with its TTL, over UDP and TCP.
    let dns = a.dns.expect("dns port");
    let m = udp(dns, "db-primary.query.consul.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(addrs(&m), ["10.0.0.1"]);
    assert!(m.answers().iter().all(|r| r.ttl() == 7));
    let m = tcp(dns, "tier-replica.query.dc1.consul.", RecordType::A);
    assert_eq!(addrs(&m), ["10.0.0.5"]);
    let m = udp(dns, "db-primary.query.consul.", RecordType::SRV);
    let RData::SRV(s) = m.answers()[0].data() else {
        panic!("not SRV: {m:?}")
    };
    assert_eq!(
        (s.port(), s.target().to_ascii().as_str()),
        (5432, "n1.node.dc1.consul.")
    );
    assert!(m
        .additionals()
        .iter()
        .any(|r| r.data().to_string() == "10.0.0.1"));
    let m = udp(dns, "nothing-here.query.consul.", RecordType::A);
    assert_eq!(
        m.response_code(),
        ResponseCode::NXDomain,
        "the catch-all finds no instance"
    );

    // Over DNS, a query's `Near: "_agent"` is the agent answering: its own instance first.
    let r = put(
        &a.url("/v1/agent/service/register"),
        br#"{"Name": "db", "Port": 5432}"#,
    )
    .await?;
    assert_eq!(r.status, 200, "{}", r.text());
    create(
        &a,
        json!({"Name": "db-near", "Service": {"Service": "db", "Near": "_agent"}}),
    )
    .await;
    wait_until(
        "the agent's db instance in the catalog",
        Duration::from_secs(10),
        || async {
            let r = get(&a.url("/v1/catalog/service/db")).await.ok()?;
            (r.json().as_array()?.len() == 6).then_some(())
        },
    )
    .await?;
    for _ in 0..8 {
        let m = udp(dns, "db-near.query.consul.", RecordType::A);
        assert_eq!(addrs(&m)[0], "127.0.0.1", "{m:?}");
    }
    Ok(())
}

fn ask(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(rand::random())
        .add_query(Query::query(Name::from_str(name).expect("name"), qtype));
    m.to_vec().expect("encode")
}

fn udp(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.send_to(&ask(name, qtype), addr).expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).expect("reply");
    Message::from_vec(&buf[..n]).expect("decode")
}

fn tcp(addr: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let q = ask(name, qtype);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).expect("query");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).expect("reply");
    Message::from_vec(&buf).expect("decode")
}

fn addrs(m: &Message) -> Vec<String> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}
