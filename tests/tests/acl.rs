//! ACLs end to end against a real agent with an `acl` block in its config dir: bootstrap,
//! a token limited to a key prefix (writes, Consul's 403, filtered listings), DNS with the
//! agent's default token, token expiry, and ACL state across a kill -9 and restart.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use muster_tests::*;
use serde_json::{json, Value};

fn config_dir(root: &std::path::Path, acl: &str) -> String {
    let dir = root.join("config");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("acl.hcl"), acl).expect("write config");
    dir.display().to_string()
}

/// The secret the tests below configure as `initial_management`.
const ROOT: &str = "root-secret";

/// A single server with ACLs on (default deny, [`ROOT`] as the initial management token),
/// `acl_lines` added to its `acl` block and `token_lines` to `acl.tokens`, once its first
/// leader has made [`ROOT`].
async fn acl_server(
    root: &std::path::Path,
    name: &str,
    acl_lines: &str,
    token_lines: &str,
) -> anyhow::Result<Agent> {
    let dir = config_dir(
        root,
        &format!(
            "acl {{\n  enabled = true\n  default_policy = \"deny\"\n{acl_lines}\n  tokens {{\n    initial_management = \"{ROOT}\"\n{token_lines}\n  }}\n}}\n"
        ),
    );
    let a = single_server(root, name, &["-config-dir", &dir]).await?;
    wait_for_root(&a).await?;
    Ok(a)
}

/// Waits until [`ROOT`] works on `a` (the first leader writes it).
async fn wait_for_root(a: &Agent) -> anyhow::Result<()> {
    wait_until("initial management token", Duration::from_secs(15), || {
        let url = a.url("/v1/acl/token/self");
        async move { (call("GET", &url, Some(ROOT), None).await.status == 200).then_some(()) }
    })
    .await
}

/// A new policy `name` with `rules` and a token of it: (secret, accessor).
async fn token_with(a: &Agent, name: &str, rules: &str) -> (String, String) {
    let policy = json!({"Name": name, "Rules": rules});
    let p = call("PUT", &a.url("/v1/acl/policy"), Some(ROOT), Some(policy)).await;
    assert_eq!(p.status, 200, "{}", p.text());
    let t = json!({"Policies": [{"Name": name}]});
    let t = call("PUT", &a.url("/v1/acl/token"), Some(ROOT), Some(t)).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let field = |f: &str| t.json()[f].as_str().expect("token field").to_string();
    (field("SecretID"), field("AccessorID"))
}

/// Consul's denial of `what` on `on` to the token `accessor`.
fn denied(accessor: &str, what: &str, on: &str) -> String {
    format!("Permission denied: token with AccessorID '{accessor}' lacks permission '{what}' on \"{on}\"")
}

fn dns_rcode(addr: SocketAddr, name: &str) -> ResponseCode {
    let mut m = Message::new();
    m.set_id(7).set_recursion_desired(true);
    m.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.send_to(&m.to_vec().expect("encode"), addr).expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).expect("reply");
    Message::from_vec(&buf[..n])
        .expect("decode")
        .response_code()
}

#[tokio::test]
async fn bootstrap_prefix_token_filtering_expiry_and_restart() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = config_dir(
        root.path(),
        r#"acl {
  enabled = true
  default_policy = "deny"
  token_min_expiration_ttl = "1s"
}"#,
    );
    let mut a = single_server(root.path(), "acl1", &["-config-dir", &dir]).await?;

    let boot = call("PUT", &a.url("/v1/acl/bootstrap"), None, None).await;
    assert_eq!(boot.status, 200, "{}\n{}", boot.text(), a.logs());
    let root_secret = boot.json()["SecretID"]
        .as_str()
        .expect("secret")
        .to_string();
    assert_eq!(
        boot.json()["Policies"][0]["Name"],
        "global-management",
        "{}",
        boot.text()
    );
    let again = call("PUT", &a.url("/v1/acl/bootstrap"), None, None).await;
    assert_eq!(again.status, 403);
    assert!(
        again
            .text()
            .starts_with("Permission denied: ACL bootstrap no longer allowed (reset index: "),
        "{}",
        again.text()
    );
    // A secret leaves the agent only in replies, never in its log.
    assert!(!a.logs().contains(&root_secret), "secret logged");

    let root_tok = Some(root_secret.as_str());
    let policy =
        json!({"Name": "app-write", "Rules": "key_prefix \"app/\" { policy = \"write\" }"});
    let p = call("PUT", &a.url("/v1/acl/policy"), root_tok, Some(policy)).await;
    assert_eq!(p.status, 200, "{}", p.text());
    assert_eq!(p.json()["Name"], "app-write");
    let listed = call("GET", &a.url("/v1/acl/policies"), root_tok, None).await;
    assert!(listed.header("X-Consul-Index").is_some_and(|i| i != "0"));
    assert!(
        listed.json()[0].get("Rules").is_none(),
        "list stubs carry no rules"
    );
    let tok = json!({"Description": "app", "Policies": [{"Name": "app-write"}]});
    let t = call("PUT", &a.url("/v1/acl/token"), root_tok, Some(tok)).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let app_secret = t.json()["SecretID"].as_str().expect("secret").to_string();
    let app_accessor = t.json()["AccessorID"].as_str().expect("id").to_string();
    let app = Some(app_secret.as_str());

    let w = call("PUT", &a.url("/v1/kv/app/x"), app, Some(json!("v"))).await;
    assert_eq!((w.status, w.text().as_str()), (200, "true"));
    let other = call("PUT", &a.url("/v1/kv/other/x"), app, Some(json!("v"))).await;
    assert_eq!(other.status, 403);
    assert_eq!(
        other.text(),
        format!(
            "Permission denied: token with AccessorID '{app_accessor}' lacks permission \
             'key:write' on \"other/x\""
        )
    );
    let root_put = call("PUT", &a.url("/v1/kv/other/y"), root_tok, Some(json!("v"))).await;
    assert_eq!(root_put.status, 200);

    let list = call("GET", &a.url("/v1/kv/?recurse"), app, None).await;
    assert_eq!(list.status, 200, "{}", list.text());
    let listed = list.json();
    let keys: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|e| e["Key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["app/x"]);
    assert_eq!(
        list.header("X-Consul-Results-Filtered-By-ACLs").as_deref(),
        Some("true")
    );
    let names = call("GET", &a.url("/v1/kv/?keys"), app, None).await;
    assert_eq!(names.json(), json!(["app/x"]));
    let all = call("GET", &a.url("/v1/kv/?recurse"), root_tok, None).await;
    assert_eq!(all.json().as_array().map(Vec::len), Some(2));
    assert_eq!(all.header("X-Consul-Results-Filtered-By-ACLs"), None);

    // No token: the anonymous token, which has no policies under default deny.
    let anon = call("GET", &a.url("/v1/kv/app/x"), None, None).await;
    assert_eq!(anon.status, 403);
    assert!(
        anon.text().starts_with(
            "Permission denied: anonymous token lacks permission 'key:read' on \"app/x\""
        ),
        "{}",
        anon.text()
    );
    // A secret nobody issued.
    let bogus = call("GET", &a.url("/v1/kv/app/x"), Some("nope"), None).await;
    assert_eq!(
        (bogus.status, bogus.text().as_str()),
        (403, "ACL not found")
    );
    // The other ways of presenting a token.
    let bearer = http()
        .get(a.url("/v1/kv/app/x"))
        .header("Authorization", format!("Bearer {app_secret}"))
        .send()
        .await?;
    assert_eq!(bearer.status().as_u16(), 200);
    let query = call(
        "GET",
        &a.url(&format!("/v1/kv/app/x?token={app_secret}")),
        None,
        None,
    )
    .await;
    assert_eq!(query.status, 200);
    // Reading ACLs needs acl:read.
    let denied = call("GET", &a.url("/v1/acl/tokens"), app, None).await;
    assert_eq!(denied.status, 403);
    let me = call("GET", &a.url("/v1/acl/token/self"), app, None).await;
    assert_eq!(me.json()["AccessorID"], app_accessor.as_str());

    // A token's life is bounded: here from 1s (configured) to 24h (Consul's default).
    for (ttl, why) in [
        ("500ms", "less than 1s in the future (was 500ms)"),
        ("24h1m", "more than 24h0m0s in the future (was 24h1m0s)"),
    ] {
        let t = json!({"Policies": [{"Name": "app-write"}], "ExpirationTTL": ttl});
        let r = call("PUT", &a.url("/v1/acl/token"), root_tok, Some(t)).await;
        assert_eq!(
            (r.status, r.text()),
            (400, format!("ExpirationTime cannot be {why}"))
        );
    }
    // Expiry takes effect.
    let short = json!({"Policies": [{"Name": "app-write"}], "ExpirationTTL": "2s"});
    let s = call("PUT", &a.url("/v1/acl/token"), root_tok, Some(short)).await;
    assert_eq!(s.status, 200, "{}", s.text());
    assert!(s.json()["ExpirationTime"].is_string(), "{}", s.text());
    let short_secret = s.json()["SecretID"].as_str().expect("secret").to_string();
    let ok = call("GET", &a.url("/v1/kv/app/x"), Some(&short_secret), None).await;
    assert_eq!(ok.status, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let expired = call("GET", &a.url("/v1/kv/app/x"), Some(&short_secret), None).await;
    assert_eq!(
        (expired.status, expired.text().as_str()),
        (403, "ACL not found")
    );

    // A blocking query checks its token again when it wakes: deleted meanwhile, refused.
    let tok = json!({"Policies": [{"Name": "app-write"}]});
    let t2 = call("PUT", &a.url("/v1/acl/token"), root_tok, Some(tok)).await;
    let t2_secret = t2.json()["SecretID"].as_str().expect("secret").to_string();
    let t2_id = t2.json()["AccessorID"].as_str().expect("id").to_string();
    let first = call("GET", &a.url("/v1/kv/app/x"), Some(&t2_secret), None).await;
    let index = first.header("X-Consul-Index").expect("index");
    let url = a.url(&format!("/v1/kv/app/x?index={index}&wait=10s"));
    let waiting = tokio::spawn(async move { call("GET", &url, Some(&t2_secret), None).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let del = call(
        "DELETE",
        &a.url(&format!("/v1/acl/token/{t2_id}")),
        root_tok,
        None,
    )
    .await;
    assert_eq!(del.status, 200, "{}", del.text());
    call("PUT", &a.url("/v1/kv/app/x"), root_tok, Some(json!("w"))).await;
    let woke = waiting.await?;
    assert_eq!((woke.status, woke.text().as_str()), (403, "ACL not found"));

    // ACL state survives kill -9 and a restart.
    a.restart()?;
    wait_until("leader", Duration::from_secs(15), || leader_of(&a)).await?;
    let after = wait_until("token works", Duration::from_secs(10), || {
        let url = a.url("/v1/kv/app/x");
        let secret = app_secret.clone();
        async move {
            let r = call("GET", &url, Some(&secret), None).await;
            (r.status == 200).then_some(r)
        }
    })
    .await?;
    assert_eq!(after.status, 200);
    let other = call("PUT", &a.url("/v1/kv/other/x"), app, Some(json!("v"))).await;
    assert_eq!(other.status, 403);
    let again = call("PUT", &a.url("/v1/acl/bootstrap"), None, None).await;
    assert_eq!(again.status, 403, "{}", again.text());
    // The documented recovery: the reset index written to the data dir allows one more.
    let text = again.text();
    let reset = text
        .rsplit("reset index: ")
        .next()
        .and_then(|r| r.trim_end_matches(')').parse::<u64>().ok())
        .expect("reset index in the refusal");
    std::fs::write(a.data_dir.join("acl-bootstrap-reset"), reset.to_string())?;
    let reboot = call("PUT", &a.url("/v1/acl/bootstrap"), None, None).await;
    assert_eq!(reboot.status, 200, "{}", reboot.text());
    let stale = call("PUT", &a.url("/v1/acl/bootstrap"), None, None).await;
    assert!(
        stale
            .text()
            .starts_with("Permission denied: Invalid bootstrap reset index (specified "),
        "{}",
        stale.text()
    );
    Ok(())
}

#[tokio::test]
async fn dns_answers_with_the_default_token_and_initial_management_works() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    // `acl_server` returns once the first leader has made the initial management token.
    let a = acl_server(root.path(), "acl2", "", "    default = \"dns-secret\"").await?;
    let root_tok = Some(ROOT);
    let me = call("GET", &a.url("/v1/acl/token/self"), root_tok, None).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["Policies"][0]["Name"], "global-management");

    let policy = json!({"Name": "dns", "Rules": "service \"web\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }"});
    let p = call("PUT", &a.url("/v1/acl/policy"), root_tok, Some(policy)).await;
    assert_eq!(p.status, 200, "{}", p.text());
    let tok = json!({"SecretID": "dns-secret", "Policies": [{"Name": "dns"}]});
    let t = call("PUT", &a.url("/v1/acl/token"), root_tok, Some(tok)).await;
    assert_eq!(t.status, 200, "{}", t.text());
    // Consul's bounds by default: a token lives at least a minute.
    let short = json!({"Policies": [{"Name": "dns"}], "ExpirationTTL": "30s"});
    let r = call("PUT", &a.url("/v1/acl/token"), root_tok, Some(short)).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            400,
            "ExpirationTime cannot be less than 1m0s in the future (was 30s)"
        )
    );
    for name in ["web", "db"] {
        let reg =
            json!({"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": name, "Port": 80}});
        let r = call("PUT", &a.url("/v1/catalog/register"), root_tok, Some(reg)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let dns = a.dns.expect("dns port");
    assert_eq!(dns_rcode(dns, "web.service.consul."), ResponseCode::NoError);
    assert_eq!(dns_rcode(dns, "db.service.consul."), ResponseCode::NXDomain);
    assert_eq!(dns_rcode(dns, "n1.node.consul."), ResponseCode::NoError);

    // Over HTTP, the default token stands in for a missing one: lists are filtered.
    let services = call("GET", &a.url("/v1/catalog/services"), None, None).await;
    let names: Vec<String> = services
        .json()
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(names, ["web"], "{}", services.text());
    assert_eq!(
        services
            .header("X-Consul-Results-Filtered-By-ACLs")
            .as_deref(),
        Some("true")
    );
    for secret in ["root-secret", "dns-secret"] {
        assert!(!a.logs().contains(secret), "{secret} logged");
    }
    Ok(())
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The value after `label` in Consul's pretty output.
fn line<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
        .unwrap_or("")
}

#[tokio::test]
async fn cli_bootstraps_and_manages_policies_tokens_and_roles() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = config_dir(
        root.path(),
        "acl {\n  enabled = true\n  default_policy = \"deny\"\n}\n",
    );
    let a = single_server(root.path(), "acl3", &["-config-dir", &dir]).await?;
    let boot = a.cli(&["acl", "bootstrap"]);
    let text = out(&boot);
    assert!(boot.status.success(), "{text}");
    assert_eq!(
        line(&text, "Description:"),
        "Bootstrap Token (Global Management)"
    );
    assert!(
        text.contains("Policies:\n   00000000-0000-0000-0000-000000000001 - global-management"),
        "{text}"
    );
    let secret = line(&text, "SecretID:").to_string();
    let again = a.cli(&["acl", "bootstrap"]);
    assert!(!again.status.success());
    assert!(
        out(&again).contains("ACL bootstrap no longer allowed"),
        "{}",
        out(&again)
    );

    let tok = ["-token", secret.as_str()];
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(tok);
        let o = a.cli(&all);
        assert!(o.status.success(), "{args:?}: {}", out(&o));
        out(&o)
    };
    let p = run(&[
        "acl",
        "policy",
        "create",
        "-name",
        "kv-app",
        "-rules",
        "key_prefix \"app/\" { policy = \"write\" }",
    ]);
    assert_eq!(line(&p, "Name:"), "kv-app", "{p}");
    let r = run(&[
        "acl",
        "role",
        "create",
        "-name",
        "app",
        "-policy-name",
        "kv-app",
    ]);
    assert!(r.contains(" - kv-app"), "{r}");
    let t = run(&[
        "acl",
        "token",
        "create",
        "-description",
        "app token",
        "-role-name",
        "app",
    ]);
    assert_eq!(line(&t, "Description:"), "app token", "{t}");
    let app_secret = line(&t, "SecretID:").to_string();
    let app_id = line(&t, "AccessorID:").to_string();
    // The role's policy grants the token app/.
    let w = call(
        "PUT",
        &a.url("/v1/kv/app/z"),
        Some(&app_secret),
        Some(json!("v")),
    )
    .await;
    assert_eq!(w.status, 200, "{}", w.text());
    let read = run(&["acl", "token", "read", "-id", &app_id]);
    assert!(read.contains("Roles:\n   "), "{read}");
    let list = run(&["acl", "token", "list"]);
    assert!(list.contains(&app_id), "{list}");
    let policies = run(&["acl", "policy", "list"]);
    assert!(
        policies.contains("kv-app:") && policies.contains("global-management:"),
        "{policies}"
    );
    let del = run(&["acl", "token", "delete", "-id", &app_id]);
    assert!(del.contains("deleted successfully"), "{del}");
    let gone = call(
        "PUT",
        &a.url("/v1/kv/app/z"),
        Some(&app_secret),
        Some(json!("v")),
    )
    .await;
    assert_eq!(gone.status, 403);
    // Reading a policy or role that is not there is a 404 that names it, as in later Consul
    // versions; a token that is not there stays 403, and an ID that is no UUID is refused.
    let r = call(
        "GET",
        &a.url(&format!("/v1/acl/token/{app_id}")),
        Some(&secret),
        None,
    )
    .await;
    assert_eq!((r.status, r.text()), (403, "ACL not found".to_string()));
    let r = call("GET", &a.url("/v1/acl/policy/unknown"), Some(&secret), None).await;
    assert_eq!(
        (r.status, r.text()),
        (400, "Invalid policy ID \"unknown\": not a UUID".to_string())
    );
    let missing = "00000000-0000-0000-0000-00000000dead";
    for (kind, path) in [
        ("policy", "/v1/acl/policy/name/no-such-policy".to_string()),
        ("role", format!("/v1/acl/role/{missing}")),
        ("role", "/v1/acl/role/name/no-such-role".to_string()),
    ] {
        let r = call("GET", &a.url(&path), Some(&secret), None).await;
        assert_eq!(
            (r.status, r.text()),
            (
                404,
                format!("Requested {kind} does not exist: ACL not found")
            ),
            "{path}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn down_policy_applies_on_a_client_agent_when_no_server_answers() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = config_dir(
        root.path(),
        r#"acl {
  enabled = true
  default_policy = "deny"
  down_policy = "allow"
  token_ttl = "1s"
  tokens { initial_management = "root-secret" }
}
performance {
  rpc_hold_timeout = "1s"
}"#,
    );
    let mut s1 = single_server(root.path(), "down-s1", &["-config-dir", &dir]).await?;
    let join = s1.serf.to_string();
    let c1 = Agent::start(
        "down-c1",
        &root.path().join("down-c1"),
        &["-retry-join", &join, "-config-dir", &dir],
    )?;
    wait_until("client sees a leader", Duration::from_secs(15), || {
        leader_of(&c1)
    })
    .await?;
    // With a server answering, a secret nobody issued is refused.
    let r = wait_until(
        "client resolves through the server",
        Duration::from_secs(10),
        || {
            let url = c1.url("/v1/agent/self");
            async move {
                let r = call("GET", &url, Some("unknown-1"), None).await;
                (r.status == 403).then_some(r)
            }
        },
    )
    .await?;
    assert_eq!(r.text(), "ACL not found");

    // A token deleted on the servers stops working on the client once its `token_ttl`
    // (1s here) has passed.
    let root_tok = Some("root-secret");
    let policy = json!({"Name": "agents", "Rules": "agent_prefix \"\" { policy = \"read\" }"});
    let p = call("PUT", &s1.url("/v1/acl/policy"), root_tok, Some(policy)).await;
    assert_eq!(p.status, 200, "{}", p.text());
    let tok = json!({"Policies": [{"Name": "agents"}]});
    let t = call("PUT", &s1.url("/v1/acl/token"), root_tok, Some(tok)).await;
    let secret = t.json()["SecretID"].as_str().expect("secret").to_string();
    let accessor = t.json()["AccessorID"].as_str().expect("id").to_string();
    let ok = call("GET", &c1.url("/v1/agent/self"), Some(&secret), None).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let del = call(
        "DELETE",
        &s1.url(&format!("/v1/acl/token/{accessor}")),
        root_tok,
        None,
    )
    .await;
    assert_eq!(del.status, 200, "{}", del.text());
    wait_until("client drops the deleted token", Duration::from_secs(5), || {
        let url = c1.url("/v1/agent/self");
        let secret = secret.clone();
        async move { (call("GET", &url, Some(&secret), None).await.status == 403).then_some(()) }
    })
    .await?;

    s1.kill9();
    // No server: down_policy = "allow".
    let r = call("GET", &c1.url("/v1/agent/self"), Some("unknown-2"), None).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), c1.logs());
    assert!(c1.logs().contains("applying down_policy"));
    Ok(())
}

/// ACL state lives in Raft: a policy and token written through one server keep working on
/// every server after the leader is killed with -9, and on the killed one once restarted.
#[tokio::test]
async fn acl_state_survives_a_leader_kill_in_a_cluster() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let dir = config_dir(
        root.path(),
        r#"acl {
  enabled = true
  default_policy = "deny"
  tokens { initial_management = "root-secret" }
}"#,
    );
    let mut servers = start_servers(root.path(), 3, &["-config-dir", &dir]).await?;
    let leader = wait_for_agreed_leader(&servers, Duration::from_secs(20))
        .await?
        .expect("a leader among the servers");
    let root_tok = Some(ROOT);
    let via = &servers[(leader + 1) % 3];
    wait_for_root(via).await?;
    let policy = json!({"Name": "app", "Rules": "key_prefix \"app/\" { policy = \"write\" }"});
    let p = call("PUT", &via.url("/v1/acl/policy"), root_tok, Some(policy)).await;
    assert_eq!(p.status, 200, "{}", p.text());
    let tok = json!({"Policies": [{"Name": "app"}]});
    let t = call("PUT", &via.url("/v1/acl/token"), root_tok, Some(tok)).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let secret = t.json()["SecretID"].as_str().expect("secret").to_string();
    let app = Some(secret.as_str());

    servers[leader].kill9();
    let alive: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &i in &alive {
        let s = &servers[i];
        let w = wait_until(
            "a write with the token after the kill",
            Duration::from_secs(20),
            || {
                let url = s.url(&format!("/v1/kv/app/from-{i}"));
                async move {
                    let r = call("PUT", &url, app, Some(json!("v"))).await;
                    (r.status == 200).then_some(r)
                }
            },
        )
        .await?;
        assert_eq!(w.text(), "true");
        let other = call("PUT", &s.url("/v1/kv/other/x"), app, Some(json!("v"))).await;
        assert_eq!(other.status, 403, "{}", other.text());
    }
    let again = call(
        "PUT",
        &servers[alive[0]].url("/v1/acl/bootstrap"),
        None,
        None,
    )
    .await;
    assert_eq!(again.status, 403, "{}", again.text());

    servers[leader].restart()?;
    let back = &servers[leader];
    let listed = wait_until(
        "the restarted server serves the token",
        Duration::from_secs(20),
        || {
            let url = back.url("/v1/kv/app/?keys");
            async move {
                let r = call("GET", &url, app, None).await;
                (r.status == 200 && r.json().as_array().is_some_and(|l| l.len() == 2)).then_some(r)
            }
        },
    )
    .await?;
    assert_eq!(
        listed.json(),
        json!([
            format!("app/from-{}", alive[0]),
            format!("app/from-{}", alive[1])
        ])
    );
    let other = call("PUT", &back.url("/v1/kv/other/x"), app, Some(json!("v"))).await;
    assert_eq!(other.status, 403, "{}", other.text());
    Ok(())
}

/// Catalog writes are judged as Consul's `vetRegisterWithACL`: a check by the service name of
/// the instance it names (not the instance ID), the node only when its details change.
#[tokio::test]
async fn catalog_writes_are_judged_by_service_name_and_node_changes() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = acl_server(root.path(), "acl-cat", "", "").await?;
    let root_tok = Some(ROOT);
    for (id, name) in [("web-1", "web"), ("db-1", "db")] {
        let reg = json!({"Node": "n1", "Address": "10.0.0.1",
            "Service": {"ID": id, "Service": name, "Port": 80}});
        let r = call("PUT", &a.url("/v1/catalog/register"), root_tok, Some(reg)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let rules = "service \"web\" { policy = \"write\" }\nnode \"n1\" { policy = \"read\" }";
    let (secret, accessor) = token_with(&a, "web", rules).await;
    let web = Some(secret.as_str());
    let denied = |what: &str, on: &str| denied(&accessor, what, on);
    let (reg_url, dereg_url) = (
        a.url("/v1/catalog/register"),
        a.url("/v1/catalog/deregister"),
    );
    let register = |body: Value| call("PUT", &reg_url, web, Some(body));

    // The node re-posted unchanged, a web instance and its check: service:write is enough.
    let r = register(json!({"Node": "n1", "Address": "10.0.0.1",
        "Service": {"ID": "web-2", "Service": "web", "Port": 81},
        "Check": {"CheckID": "web-2-alive", "ServiceID": "web-2", "Status": "passing"}}))
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // A check on the db instance is judged by its service's name, "db", not "db-1".
    let r = register(json!({"Node": "n1", "Address": "10.0.0.1",
        "Check": {"CheckID": "db-alive", "ServiceID": "db-1"}}))
    .await;
    assert_eq!((r.status, r.text()), (403, denied("service:write", "db")));
    // Changing the node's address, or making a new node, needs node:write.
    let r = register(
        json!({"Node": "n1", "Address": "10.0.0.9", "Service": {"Service": "web", "ID": "web-1"}}),
    )
    .await;
    assert_eq!((r.status, r.text()), (403, denied("node:write", "n1")));
    let r =
        register(json!({"Node": "n2", "Address": "10.0.0.2", "Service": {"Service": "web"}})).await;
    assert_eq!((r.status, r.text()), (403, denied("node:write", "n2")));
    // Deregistering: an instance of its own service, yes; db's, no.
    let dereg = |body: Value| call("PUT", &dereg_url, web, Some(body));
    let r = dereg(json!({"Node": "n1", "ServiceID": "web-1"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = dereg(json!({"Node": "n1", "ServiceID": "db-1"})).await;
    assert_eq!((r.status, r.text()), (403, denied("service:write", "db")));
    let r = dereg(json!({"Node": "n1", "CheckID": "web-2-alive"})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let left = call("GET", &a.url("/v1/catalog/node/n1"), root_tok, None).await;
    let mut ids: Vec<String> = left.json()["Services"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    ids.sort();
    assert_eq!(ids, ["db-1", "web-2"], "{}", left.text());
    // Reading a node: its services filtered to what the token may read, and `null` (not a
    // 403) for a node it may not read, as Consul answers.
    let seen = call("GET", &a.url("/v1/catalog/node/n1"), web, None).await;
    let ids: Vec<String> = seen.json()["Services"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(ids, ["web-2"], "{}", seen.text());
    assert_eq!(
        seen.header("X-Consul-Results-Filtered-By-ACLs").as_deref(),
        Some("true")
    );
    let anon = call("GET", &a.url("/v1/catalog/node/n1"), None, None).await;
    assert_eq!((anon.status, anon.text().as_str()), (200, "null"));
    Ok(())
}

/// `muster acl set-agent-token` replaces the agent's `default` token at run time (DNS answers
/// with it at once), `enable_token_persistence` keeps it across a kill -9, and the
/// `agent_recovery` token administers this agent and nothing else.
#[tokio::test]
async fn agent_tokens_set_at_run_time_persist_and_the_recovery_token_is_local() -> anyhow::Result<()>
{
    let root = tempfile::tempdir()?;
    let mut a = acl_server(
        root.path(),
        "acl-tok",
        "  enable_token_persistence = true",
        "    agent_recovery = \"recovery-secret\"",
    )
    .await?;
    let root_tok = Some(ROOT);
    let policy = json!({"Name": "dns", "Rules": "service_prefix \"\" { policy = \"read\" }"});
    let p = call("PUT", &a.url("/v1/acl/policy"), root_tok, Some(policy)).await;
    assert_eq!(p.status, 200, "{}", p.text());
    let tok = json!({"SecretID": "dns-secret", "Policies": [{"Name": "dns"}]});
    let t = call("PUT", &a.url("/v1/acl/token"), root_tok, Some(tok)).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let reg =
        json!({"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": "web", "Port": 80}});
    let r = call("PUT", &a.url("/v1/catalog/register"), root_tok, Some(reg)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let dns = a.dns.expect("dns port");
    assert_eq!(
        dns_rcode(dns, "web.service.consul."),
        ResponseCode::NXDomain
    );

    let set = a.cli(&[
        "acl",
        "set-agent-token",
        "-token",
        "root-secret",
        "default",
        "dns-secret",
    ]);
    assert!(set.status.success(), "{}", out(&set));
    assert_eq!(out(&set), "ACL token \"default\" set successfully\n");
    assert_eq!(dns_rcode(dns, "web.service.consul."), ResponseCode::NoError);
    // Setting a token is acl:write; an unknown kind is Consul's 404.
    let anon = call(
        "PUT",
        &a.url("/v1/agent/token/default"),
        None,
        Some(json!({"Token": "x"})),
    )
    .await;
    assert_eq!(anon.status, 403, "{}", anon.text());
    let unknown = call(
        "PUT",
        &a.url("/v1/agent/token/nope"),
        root_tok,
        Some(json!({"Token": "x"})),
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.text().as_str()),
        (404, "Token \"nope\" is unknown")
    );
    assert!(!a.logs().contains("dns-secret"), "a token set was logged");

    a.restart()?;
    wait_until("leader", Duration::from_secs(15), || leader_of(&a)).await?;
    let dns = a.dns.expect("dns port");
    wait_until(
        "DNS answers with the persisted token",
        Duration::from_secs(10),
        || async { (dns_rcode(dns, "web.service.consul.") == ResponseCode::NoError).then_some(()) },
    )
    .await?;

    // The recovery token: this agent's endpoints, not the data.
    let recovery = Some("recovery-secret");
    let me = call("GET", &a.url("/v1/agent/self"), recovery, None).await;
    assert_eq!(me.status, 200, "{}", me.text());
    let kv = call("PUT", &a.url("/v1/kv/x"), recovery, Some(json!("v"))).await;
    assert_eq!(
        (kv.status, kv.text().as_str()),
        (
            403,
            "Permission denied: token with AccessorID 'agent-recovery' lacks permission 'key:write' on \"x\""
        )
    );
    Ok(())
}

/// Registrations with the agent are vetted as Consul's `vetServiceRegister` and
/// `vetCheckRegister`: what an ID would replace counts, and a body that spells a field twice
/// (so that the check and the handler could read it differently) is refused.
#[tokio::test]
async fn agent_registrations_vet_what_they_replace() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = acl_server(root.path(), "acl-agent", "", "").await?;
    let root_tok = Some(ROOT);
    for (id, name) in [("web-1", "web"), ("db-1", "db")] {
        let svc = json!({"ID": id, "Name": name, "Port": 80});
        let r = call(
            "PUT",
            &a.url("/v1/agent/service/register"),
            root_tok,
            Some(svc),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let m = call(
        "PUT",
        &a.url("/v1/agent/maintenance?enable=true&reason=test"),
        root_tok,
        None,
    )
    .await;
    assert_eq!(m.status, 200, "{}", m.text());
    let (secret, accessor) = token_with(&a, "web", "service \"web\" { policy = \"write\" }").await;
    let web = Some(secret.as_str());
    let denied = |what: &str, on: &str| denied(&accessor, what, on);
    let (svc_url, check_url) = (
        a.url("/v1/agent/service/register"),
        a.url("/v1/agent/check/register"),
    );

    // Its own service: yes. Taking over db's instance ID: needs db.
    let ok = call(
        "PUT",
        &svc_url,
        web,
        Some(json!({"ID": "web-2", "Name": "web"})),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let take = call(
        "PUT",
        &svc_url,
        web,
        Some(json!({"ID": "db-1", "Name": "web"})),
    )
    .await;
    assert_eq!(
        (take.status, take.text()),
        (403, denied("service:write", "db"))
    );
    // Overwriting the node's maintenance check through a web instance: needs the node.
    let maint = json!({"ID": "_node_maintenance", "Name": "m", "ServiceID": "web-1", "TTL": "1m"});
    let r = call("PUT", &check_url, web, Some(maint)).await;
    assert_eq!(
        (r.status, r.text()),
        (403, denied("node:write", "acl-agent"))
    );
    // A check spelled `service_id` is the same field: db's instance, db's rights.
    let r = call(
        "PUT",
        &check_url,
        web,
        Some(json!({"Name": "c", "service_id": "db-1", "TTL": "1m"})),
    )
    .await;
    assert_eq!((r.status, r.text()), (403, denied("service:write", "db")));
    // The same field twice, in two spellings: refused before anyone reads it.
    let r = call(
        "PUT",
        &svc_url,
        web,
        Some(json!({"Name": "web", "name": "db", "ID": "x"})),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (
            400,
            "Request decode failed: field \"name\" is given more than once"
        )
    );
    let services = call("GET", &a.url("/v1/agent/services"), root_tok, None).await;
    let mut ids: Vec<String> = services
        .json()
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    ids.sort();
    assert_eq!(ids, ["db-1", "web-1", "web-2"], "{}", services.text());
    Ok(())
}

/// A prepared query runs with the token it was stored with, else the caller's (over DNS: the
/// agent's default): its answer holds only instances that token may read, as Consul filters.
#[tokio::test]
async fn prepared_queries_answer_what_their_token_may_read() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = acl_server(root.path(), "acl-pq", "", "").await?;
    let root_tok = Some(ROOT);
    let reg =
        json!({"Node": "n1", "Address": "10.0.0.1", "Service": {"Service": "web", "Port": 80}});
    let r = call("PUT", &a.url("/v1/catalog/register"), root_tok, Some(reg)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for (name, token) in [("with-token", "root-secret"), ("without", "")] {
        let q = json!({"Name": name, "Token": token, "Service": {"Service": "web"}});
        let r = call("POST", &a.url("/v1/query"), root_tok, Some(q)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let nodes = |r: &Resp| r.json()["Nodes"].as_array().map_or(0, Vec::len);
    // The stored token reads everything: the anonymous caller sees the instance.
    let r = call("GET", &a.url("/v1/query/with-token/execute"), None, None).await;
    assert_eq!((r.status, nodes(&r)), (200, 1), "{}", r.text());
    // Without one, the anonymous caller's token (default deny) reads nothing.
    let r = call("GET", &a.url("/v1/query/without/execute"), None, None).await;
    assert_eq!((r.status, nodes(&r)), (200, 0), "{}", r.text());
    assert_eq!(
        r.header("X-Consul-Results-Filtered-By-ACLs").as_deref(),
        Some("true")
    );
    let r = call("GET", &a.url("/v1/query/without/execute"), root_tok, None).await;
    assert_eq!(nodes(&r), 1, "{}", r.text());
    let dns = a.dns.expect("dns port");
    assert_eq!(
        dns_rcode(dns, "with-token.query.consul."),
        ResponseCode::NoError
    );
    assert_eq!(
        dns_rcode(dns, "without.query.consul."),
        ResponseCode::NXDomain
    );
    Ok(())
}

/// Consul 1.17's templated policies: the built-in templates are listed, read and previewed,
/// and a token or role naming `builtin/service` gets that service's rules and no more.
#[tokio::test]
async fn templated_policies_grant_their_rendered_rules() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = acl_server(root.path(), "acl-tpl", "", "").await?;
    let root_tok = Some(ROOT);

    let list = call("GET", &a.url("/v1/acl/templated-policies"), root_tok, None).await;
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    for name in ["builtin/service", "builtin/node", "builtin/dns"] {
        assert_eq!(list[name]["TemplateName"], name, "{list}");
    }
    let read = call(
        "GET",
        &a.url("/v1/acl/templated-policy/name/builtin/service"),
        root_tok,
        None,
    )
    .await;
    assert_eq!(read.json()["TemplateName"], "builtin/service");
    assert!(read.json()["Schema"]
        .as_str()
        .is_some_and(|s| s.contains("\"required\": [\"name\"]")));
    let missing = "/v1/acl/templated-policy/name/builtin/nope";
    assert_eq!(
        call("GET", &a.url(missing), root_tok, None).await.status,
        404
    );
    let preview = call(
        "POST",
        &a.url("/v1/acl/templated-policy/preview/builtin/service"),
        root_tok,
        Some(json!({"Name": "api"})),
    )
    .await;
    let p = preview.json();
    assert_eq!(preview.status, 200, "{}", preview.text());
    assert!(p["Name"]
        .as_str()
        .is_some_and(|n| n == format!("synthetic-policy-{}", p["ID"].as_str().unwrap_or("-"))));
    assert!(p["Rules"]
        .as_str()
        .is_some_and(|r| r.contains("service \"api\" {") && r.contains("api-sidecar-proxy")));
    // A name that would change the rules' text, or none, is refused.
    for body in [json!({"Name": "api\" { policy = \"write\" }"}), json!({})] {
        let r = call(
            "POST",
            &a.url("/v1/acl/templated-policy/preview/builtin/service"),
            root_tok,
            Some(body),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    // Listing them takes acl:read (the agent's root takes nothing).
    let anon = call("GET", &a.url("/v1/acl/templated-policies"), None, None).await;
    assert_eq!(anon.status, 403, "{}", anon.text());
    assert_eq!(call("GET", &a.url("/"), None, None).await.status, 200);

    // A token with `builtin/service` for web: its variables come back as Consul shows them.
    let body = json!({"Description": "templated",
        "TemplatedPolicies": [{"TemplateName": "builtin/service",
            "TemplateVariables": {"Name": "web"}}]});
    let t = call("PUT", &a.url("/v1/acl/token"), root_tok, Some(body)).await;
    assert_eq!(t.status, 200, "{}", t.text());
    let want = json!([{"TemplateName": "builtin/service", "TemplateVariables": {"name": "web"}}]);
    assert_eq!(t.json()["TemplatedPolicies"], want);
    let accessor = t.json()["AccessorID"].as_str().unwrap_or("").to_string();
    let secret = t.json()["SecretID"].as_str().unwrap_or("").to_string();
    let again = call(
        "GET",
        &a.url(&format!("/v1/acl/token/{accessor}")),
        root_tok,
        None,
    )
    .await;
    assert_eq!(again.json()["TemplatedPolicies"], want);
    // It may register web (and web's sidecar) and read the catalog, nothing else.
    let reg = |svc: &str| json!({"Name": svc, "Port": 80});
    for svc in ["web", "web-sidecar-proxy"] {
        let r = call(
            "PUT",
            &a.url("/v1/agent/service/register"),
            Some(&secret),
            Some(reg(svc)),
        )
        .await;
        assert_eq!(r.status, 200, "{svc}: {}", r.text());
    }
    let r = call(
        "PUT",
        &a.url("/v1/agent/service/register"),
        Some(&secret),
        Some(reg("db")),
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (403, denied(&accessor, "service:write", "db"))
    );
    let nodes = call("GET", &a.url("/v1/catalog/nodes"), Some(&secret), None).await;
    assert_eq!(nodes.json().as_array().map(Vec::len), Some(1));
    let kv = call("GET", &a.url("/v1/kv/x"), Some(&secret), None).await;
    assert_eq!(kv.status, 403, "{}", kv.text());

    // A role may carry one too; an unknown template or a missing name is refused.
    let role = json!({"Name": "dns-readers",
        "TemplatedPolicies": [{"TemplateName": "builtin/dns"}]});
    let r = call("PUT", &a.url("/v1/acl/role"), root_tok, Some(role)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["TemplatedPolicies"],
        json!([{"TemplateName": "builtin/dns"}])
    );
    for bad in [
        json!([{"TemplateName": "builtin/nope"}]),
        json!([{"TemplateName": "builtin/node"}]),
    ] {
        let body = json!({"TemplatedPolicies": bad});
        let r = call("PUT", &a.url("/v1/acl/token"), root_tok, Some(body)).await;
        assert_eq!(r.status, 400, "{}", r.text());
    }
    Ok(())
}
