//! Network coordinates end to end: agents probe each other over gossip, report their
//! coordinates to the servers, and the catalog serves them (`/v1/coordinate/*`, `?near`,
//! `muster rtt`), dropping a node's coordinate with the node.

use std::time::Duration;

use muster_tests::*;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

/// Node names in `/v1/coordinate/nodes` as `a` answers it.
async fn coordinate_nodes(a: &Agent) -> Option<Vec<String>> {
    let r = get(&a.url("/v1/coordinate/nodes")).await.ok()?;
    let list = r.json();
    let names = list.as_array()?.iter();
    Some(
        names
            .filter_map(|c| c["Node"].as_str().map(str::to_string))
            .collect(),
    )
}

/// The JSON body at `url`, if it answers.
async fn json_at(url: String) -> Option<Value> {
    Some(get(&url).await.ok()?.json())
}

fn first_node(list: &Value, key: impl Fn(&Value) -> &Value) -> Option<String> {
    key(list.as_array()?.first()?).as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_measures_reports_and_serves_its_coordinates() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let conf = root.path().join("coordinates.json");
    std::fs::write(
        &conf,
        r#"{"sync_coordinate_interval_min": "300ms",
            "consul": {"coordinate": {"update_period": "200ms"}}}"#,
    )?;
    let conf = conf.display().to_string();
    let server = single_server(root.path(), "s1", &["-config-file", &conf]).await?;
    let join = server.serf.to_string();
    let c1 = Agent::start(
        "c1",
        &root.path().join("c1"),
        &["-join", &join, "-config-file", &conf],
    )?;
    let c2 = Agent::start(
        "c2",
        &root.path().join("c2"),
        &["-join", &join, "-config-file", &conf],
    )?;

    // Every node reports a coordinate.
    wait_until("a coordinate for every node", DEADLINE, || async {
        let names = coordinate_nodes(&server).await?;
        ["s1", "c1", "c2"]
            .iter()
            .all(|n| names.iter().any(|m| m == n))
            .then_some(())
    })
    .await?;

    // A service on every node, for the `?near` sorts of service reads.
    for a in [&server, &c1, &c2] {
        let r = put(&a.url("/v1/agent/service/register"), br#"{"Name":"web"}"#).await?;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    // Gossip probes move an agent off the origin: its error falls below the initial 1.5.
    wait_until("c1 measured round trips", DEADLINE, || async {
        let me = json_at(c1.url("/v1/agent/self")).await?;
        (me["Coord"]["Error"].as_f64()? < 1.5).then_some(())
    })
    .await?;

    // One node's coordinate, through a client agent.
    let r = get(&c1.url("/v1/coordinate/node/c2")).await?;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("X-Consul-Index").is_some());
    let list = r.json();
    assert_eq!(list[0]["Node"], "c2");
    assert_eq!(list[0]["Segment"], "");
    assert_eq!(list[0]["Coord"]["Vec"].as_array().map(Vec::len), Some(8));
    let r = get(&c1.url("/v1/coordinate/node/ghost")).await?;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    // With the read's index, so that a client can poll (or block) for it.
    let index: u64 = r.header("X-Consul-Index").unwrap_or_default().parse()?;
    assert!(index > 0);
    assert_eq!(r.header("X-Consul-KnownLeader").as_deref(), Some("true"));

    // `?near=_agent` puts the asking agent's own node first; `?near=<node>` that node. All
    // nodes start at the origin, where every distance ties, and the first few round trips
    // place them roughly: this holds once their reported coordinates have settled.
    wait_until("each agent's own node sorted first", DEADLINE, || async {
        for (a, name) in [(&c1, "c1"), (&c2, "c2"), (&server, "s1")] {
            let nodes = json_at(a.url("/v1/catalog/nodes?near=_agent")).await?;
            if first_node(&nodes, |n| &n["Node"]).as_deref() != Some(name) {
                return None;
            }
        }
        let nodes = json_at(server.url("/v1/catalog/nodes?near=c2")).await?;
        let checks = json_at(c1.url("/v1/health/state/any?near=_agent")).await?;
        let web = json_at(c2.url("/v1/catalog/service/web?near=_agent")).await?;
        let healthy = json_at(c1.url("/v1/health/service/web?near=_agent")).await?;
        let firsts = [
            first_node(&nodes, |n| &n["Node"]),
            first_node(&checks, |c| &c["Node"]),
            first_node(&web, |s| &s["Node"]),
            first_node(&healthy, |e| &e["Node"]["Node"]),
        ];
        let want = ["c2", "c1", "c2", "c1"].map(|n| Some(n.to_string()));
        (firsts == want).then_some(())
    })
    .await?;

    // `muster rtt` estimates between two nodes, and refuses an unknown one as Consul does.
    let out = c1.cli(&["rtt", "c1", "c2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("Estimated c1 <-> c2 rtt: ")
            && stdout.ends_with(" ms (using LAN coordinates)\n"),
        "{stdout}"
    );
    let out = c1.cli(&["rtt", "s1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Estimated s1 <-> c1 rtt: "),
        "the second node defaults to the agent's own"
    );
    let out = c1.cli(&["rtt", "c1", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Could not find a coordinate for node \"ghost\"\n"
    );
    let out = c1.cli(&["rtt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("One or two node names must be specified\n"));

    // A node that leaves is deregistered, and its coordinate goes with it.
    let out = c2.cli(&["leave"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("c2's coordinate removed", DEADLINE, || async {
        let names = coordinate_nodes(&server).await?;
        (!names.iter().any(|n| n == "c2")).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn updates_need_a_catalog_node_and_leave_with_it() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = single_server(root.path(), "s1", &[]).await?;
    let coord = |node: &str| {
        serde_json::json!({
            "Node": node,
            "Coord": {"Vec": [0.001, 0, 0, 0, 0, 0, 0, 0], "Error": 0.2,
                      "Adjustment": 0, "Height": 0.00001}
        })
        .to_string()
    };
    let reg = r#"{"Node":"ext1","Address":"10.1.0.1"}"#;
    assert_eq!(
        put(&a.url("/v1/catalog/register"), reg.as_bytes())
            .await?
            .status,
        200
    );
    for node in ["ext1", "ghost"] {
        let r = put(&a.url("/v1/coordinate/update"), coord(node).as_bytes()).await?;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The leader answers at once and writes what it gathered every 5 s (Consul's
    // `coordinate.update_period`), in one log entry.
    let r = get(&a.url("/v1/coordinate/node/ext1")).await?;
    assert_eq!(r.status, 404, "not written before the next batch");
    let r = wait_until("ext1's coordinate written", DEADLINE, || async {
        let r = get(&a.url("/v1/coordinate/node/ext1")).await.ok()?;
        (r.status == 200).then_some(r)
    })
    .await?;
    assert_eq!(r.json()[0]["Coord"]["Error"], 0.2);
    // A node the catalog does not hold gets no coordinate.
    assert_eq!(get(&a.url("/v1/coordinate/node/ghost")).await?.status, 404);

    // Invalid and incompatible coordinates are refused.
    let bad = r#"{"Node":"ext1","Coord":{"Vec":[1,2],"Error":1,"Adjustment":0,"Height":0}}"#;
    let r = put(&a.url("/v1/coordinate/update"), bad.as_bytes()).await?;
    assert_eq!(
        (r.status, r.text()),
        (500, "incompatible coordinates".to_string())
    );

    let dereg = r#"{"Node":"ext1"}"#;
    assert_eq!(
        put(&a.url("/v1/catalog/deregister"), dereg.as_bytes())
            .await?
            .status,
        200
    );
    let r = get(&a.url("/v1/coordinate/node/ext1")).await?;
    assert_eq!(
        r.status, 404,
        "deregistering the node removes its coordinate"
    );
    Ok(())
}
