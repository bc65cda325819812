//! ACLs end to end against a real agent with an `acl` block in its config dir: bootstrap,
//! a token limited to a key prefix (writes, Consul's 403, filtered listings), DNS with the
//! agent's default token, token expiry, and ACL state across a kill -9 and restart.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use muster_tests::*;
use serde_json::{json, Value};

/// A request presenting `token` in `X-Consul-Token` (none: no header).
async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> Resp {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut r = http().request(method, url);
    if let Some(t) = token {
        r = r.header("X-Consul-Token", t);
    }
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let resp = r.send().await.expect("request");
    Resp {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("body").to_vec(),
    }
}

fn config_dir(root: &std::path::Path, acl: &str) -> String {
    let dir = root.join("config");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("acl.hcl"), acl).expect("write config");
    dir.display().to_string()
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
    let dir = config_dir(
        root.path(),
        r#"acl {
  enabled = true
  default_policy = "deny"
  tokens {
    initial_management = "root-secret"
    default = "dns-secret"
  }
}"#,
    );
    let a = single_server(root.path(), "acl2", &["-config-dir", &dir]).await?;
    let root_tok = Some("root-secret");
    // The first leader made the initial management token.
    let me = wait_until("initial management token", Duration::from_secs(10), || {
        let url = a.url("/v1/acl/token/self");
        async move {
            let r = call("GET", &url, root_tok, None).await;
            (r.status == 200).then_some(r)
        }
    })
    .await?;
    assert_eq!(me.json()["Policies"][0]["Name"], "global-management");

    let policy = json!({"Name": "dns", "Rules": "service \"web\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }"});
    let p = call("PUT", &a.url("/v1/acl/policy"), root_tok, Some(policy)).await;
    assert_eq!(p.status, 200, "{}", p.text());
    let tok = json!({"SecretID": "dns-secret", "Policies": [{"Name": "dns"}]});
    let t = call("PUT", &a.url("/v1/acl/token"), root_tok, Some(tok)).await;
    assert_eq!(t.status, 200, "{}", t.text());
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

    s1.kill9();
    // No server: down_policy = "allow".
    let r = call("GET", &c1.url("/v1/agent/self"), Some("unknown-2"), None).await;
    assert_eq!(r.status, 200, "{}\n{}", r.text(), c1.logs());
    assert!(c1.logs().contains("applying down_policy"));
    Ok(())
}
