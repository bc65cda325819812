//! Logins end to end: a `jwt` auth method with static keys, or a JWKS URL or OIDC discovery
//! document served by the test,
//! binding rules, `/v1/acl/login` and `/v1/acl/logout`, the tokens refused (wrong issuer,
//! expired, bad signature, wrong audience, no rule matched), deleting a method, and the CLI.
//! The test makes its own ES256 key pairs and signs its own JWTs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use muster_tests::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "https://issuer.test";

/// An ES256 key pair made for this test.
struct Key {
    pair: rcgen::KeyPair,
    kid: String,
}

impl Key {
    fn new(kid: &str) -> Key {
        Key {
            pair: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen"),
            kid: kid.into(),
        }
    }

    fn public_pem(&self) -> String {
        self.pair.public_key_pem()
    }

    /// The public key as a JWK (`x` and `y` of the uncompressed point).
    fn jwk(&self) -> Value {
        let raw = self.pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
               "x": b64(&raw[1..33]), "y": b64(&raw[33..65])})
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        let k = EncodingKey::from_ec_pem(self.pair.serialize_pem().as_bytes()).expect("key");
        jsonwebtoken::encode(&h, claims, &k).expect("sign")
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Claims that pass the method below, for the service `svc`.
fn claims(svc: &str) -> Value {
    json!({"iss": ISSUER, "aud": ["muster"], "sub": "workload", "iat": now(),
           "exp": now() + 600, "service": svc, "groups": ["readers"]})
}

/// An ACL-enabled single server (default deny), bootstrapped; its management secret.
async fn acl_agent(root: &std::path::Path, name: &str) -> anyhow::Result<(Agent, String)> {
    let dir = root.join("config");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("acl.hcl"),
        "acl {\n  enabled = true\n  default_policy = \"deny\"\n}\n",
    )?;
    let a = single_server(root, name, &["-config-dir", &dir.display().to_string()]).await?;
    let boot = call("PUT", &a.url("/v1/acl/bootstrap"), None, None).await;
    anyhow::ensure!(boot.status == 200, "bootstrap: {}", boot.text());
    let secret = boot.json()["SecretID"].as_str().unwrap_or("").to_string();
    Ok((a, secret))
}

/// `POST /v1/acl/login` through `method` with `jwt` (and a `Meta` to see in the token).
async fn login(a: &Agent, method: &str, jwt: &str) -> Resp {
    let body = json!({"AuthMethod": method, "BearerToken": jwt, "Meta": {"pod": "p1"}});
    call("POST", &a.url("/v1/acl/login"), None, Some(body)).await
}

#[tokio::test]
async fn jwt_login_binds_identities_refuses_bad_tokens_and_logs_out() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (a, root_secret) = acl_agent(root.path(), "login1").await?;
    let mgmt = Some(root_secret.as_str());
    let key = Key::new("k1");

    let method = json!({
        "Name": "workloads", "Type": "jwt", "Description": "test workloads",
        "Config": {
            "JWTValidationPubKeys": [key.public_pem()],
            "JWTSupportedAlgs": ["ES256"],
            "BoundIssuer": ISSUER,
            "BoundAudiences": ["muster"],
            "ClaimMappings": {"service": "service"},
            "ListClaimMappings": {"groups": "groups"},
        }
    });
    let m = call("PUT", &a.url("/v1/acl/auth-method"), mgmt, Some(method)).await;
    assert_eq!(m.status, 200, "{}", m.text());
    assert_eq!(m.json()["Name"], "workloads");
    assert_eq!(m.json()["Config"]["BoundIssuer"], ISSUER);
    let list = call("GET", &a.url("/v1/acl/auth-methods"), mgmt, None).await;
    assert_eq!(list.json()[0]["Type"], "jwt", "{}", list.text());
    assert!(
        list.json()[0].get("Config").is_none(),
        "stubs carry no config"
    );
    let bad_type = json!({"Name": "k8s", "Type": "kubernetes", "Config": {}});
    let r = call("PUT", &a.url("/v1/acl/auth-method"), mgmt, Some(bad_type)).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Invalid Auth Method: Type should be one of: [jwt]")
    );
    let anon = call("GET", &a.url("/v1/acl/auth-methods"), None, None).await;
    assert_eq!(anon.status, 403, "reading methods needs acl:read");

    let rule = json!({"AuthMethod": "workloads", "Selector": "value.service == web",
                      "BindType": "service", "BindName": "${value.service}"});
    let r = call("PUT", &a.url("/v1/acl/binding-rule"), mgmt, Some(rule)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["BindName"], "${value.service}");
    let pol = json!({"Name": "kv-read", "Rules": "key_prefix \"\" { policy = \"read\" }"});
    let p = call("PUT", &a.url("/v1/acl/policy"), mgmt, Some(pol)).await;
    assert_eq!(p.status, 200, "{}", p.text());
    let rule2 = json!({"AuthMethod": "workloads", "Selector": "\"readers\" in list.groups and value.service != web",
                       "BindType": "policy", "BindName": "kv-read"});
    let r = call("PUT", &a.url("/v1/acl/binding-rule"), mgmt, Some(rule2)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for (bad, why) in [
        (
            json!({"AuthMethod": "workloads", "BindType": "bogus", "BindName": "x"}),
            "Invalid Binding Rule: unknown BindType \"bogus\"",
        ),
        (
            json!({"AuthMethod": "nope", "BindType": "service", "BindName": "x"}),
            "cannot find auth method with name \"nope\"",
        ),
        (
            json!({"AuthMethod": "workloads", "BindType": "service", "BindName": "${value.nope}"}),
            "Invalid Binding Rule: invalid BindName: ",
        ),
        (
            json!({"AuthMethod": "workloads", "Selector": "claims.x == y", "BindType": "service", "BindName": "x"}),
            "invalid Binding Rule: Selector is invalid: ",
        ),
    ] {
        let r = call("PUT", &a.url("/v1/acl/binding-rule"), mgmt, Some(bad)).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().starts_with(why), "{} (wanted {why})", r.text());
    }

    // (a) A good JWT logs in and gets the service identity the rule binds.
    let jwt = key.sign(&claims("web"));
    let l1 = login(&a, "workloads", &jwt).await;
    assert_eq!(l1.status, 200, "{}\n{}", l1.text(), a.logs());
    let t = l1.json();
    assert_eq!(
        t["ServiceIdentities"],
        json!([{"ServiceName": "web"}]),
        "{t}"
    );
    assert_eq!(t["AuthMethod"], "workloads");
    assert_eq!(t["Local"], true);
    assert_eq!(
        t["Description"],
        "token created via login: {\"pod\":\"p1\"}"
    );
    assert!(
        t.get("Policies").is_none(),
        "the policy rule did not match: {t}"
    );
    let secret = t["SecretID"].as_str().expect("secret").to_string();
    let tok = Some(secret.as_str());
    let web = json!({"Name": "web", "Port": 80});
    let r = call("PUT", &a.url("/v1/agent/service/register"), tok, Some(web)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let db = json!({"Name": "db", "Port": 5432});
    let r = call("PUT", &a.url("/v1/agent/service/register"), tok, Some(db)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text()
            .contains("lacks permission 'service:write' on \"db\""),
        "{}",
        r.text()
    );

    // A policy binding: the other rule, for another service in the readers group.
    let reader = key.sign(&claims("batch"));
    let l2 = login(&a, "workloads", &reader).await;
    assert_eq!(l2.status, 200, "{}", l2.text());
    assert_eq!(l2.json()["Policies"][0]["Name"], "kv-read", "{}", l2.text());
    assert!(l2.json().get("ServiceIdentities").is_none());

    // Role and node bindings: a role by name (a missing one binds nothing), a node identity
    // in the agent's datacenter.
    let role = json!({"Name": "ops", "Policies": [{"Name": "kv-read"}]});
    let r = call("PUT", &a.url("/v1/acl/role"), mgmt, Some(role)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for (bind_type, bind_name) in [
        ("role", "ops"),
        ("role", "absent"),
        ("node", "node-${value.service}"),
    ] {
        let rule = json!({"AuthMethod": "workloads", "Selector": "\"admins\" in list.groups",
                          "BindType": bind_type, "BindName": bind_name});
        let r = call("PUT", &a.url("/v1/acl/binding-rule"), mgmt, Some(rule)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut admin = claims("web");
    admin["groups"] = json!(["admins"]);
    let l4 = login(&a, "workloads", &key.sign(&admin)).await;
    assert_eq!(l4.status, 200, "{}", l4.text());
    let t4 = l4.json();
    assert_eq!(t4["Roles"].as_array().map(Vec::len), Some(1), "{t4}");
    assert_eq!(t4["Roles"][0]["Name"], "ops");
    assert_eq!(
        t4["NodeIdentities"],
        json!([{"NodeName": "node-web", "Datacenter": "dc1"}])
    );
    assert_eq!(t4["ServiceIdentities"], json!([{"ServiceName": "web"}]));
    let kv = call(
        "GET",
        &a.url("/v1/kv/any?recurse"),
        t4["SecretID"].as_str(),
        None,
    )
    .await;
    assert_ne!(kv.status, 403, "the role's policy reads KV: {}", kv.text());

    // An update keeps the token's auth method; a login's token cannot be cloned.
    let accessor = t["AccessorID"].as_str().expect("accessor").to_string();
    let path = a.url(&format!("/v1/acl/token/{accessor}"));
    let upd = json!({"Description": "renamed", "ServiceIdentities": [{"ServiceName": "web"}]});
    let u = call("PUT", &path, mgmt, Some(upd)).await;
    assert_eq!(u.json()["AuthMethod"], "workloads", "{}", u.text());
    let c = call("PUT", &format!("{path}/clone"), mgmt, None).await;
    assert_eq!(
        (c.status, c.text().as_str()),
        (400, "Cannot clone a token created from an auth method")
    );

    // Logout deletes the token; it is then unknown.
    let out = call("POST", &a.url("/v1/acl/logout"), tok, None).await;
    assert_eq!((out.status, out.text().as_str()), (200, "true"));
    let gone = call("GET", &a.url("/v1/acl/token/self"), tok, None).await;
    assert_eq!((gone.status, gone.text().as_str()), (403, "ACL not found"));
    let again = call("POST", &a.url("/v1/acl/logout"), tok, None).await;
    assert_eq!(
        (again.status, again.text().as_str()),
        (403, "ACL not found")
    );
    // Only a login's token can log out.
    let mgmt_out = call("POST", &a.url("/v1/acl/logout"), mgmt, None).await;
    assert_eq!(
        (mgmt_out.status, mgmt_out.text().as_str()),
        (403, "Permission denied")
    );

    // (b) Refused.
    let other_key = Key::new("k1");
    let mut wrong_iss = claims("web");
    wrong_iss["iss"] = json!("https://elsewhere.test");
    let mut expired = claims("web");
    expired["iat"] = json!(now() - 7200);
    expired["exp"] = json!(now() - 3600);
    let mut wrong_aud = claims("web");
    wrong_aud["aud"] = json!(["someone-else"]);
    let mut unmatched = claims("db");
    unmatched["groups"] = json!([]);
    for (jwt, why) in [
        (
            key.sign(&wrong_iss),
            "error validating claims: validation failed, invalid issuer claim (iss)",
        ),
        (
            key.sign(&expired),
            "error validating claims: validation failed, token is expired (exp)",
        ),
        (
            other_key.sign(&claims("web")),
            "no known key successfully validated the token signature",
        ),
        (
            key.sign(&wrong_aud),
            "error validating claims: aud claim does not match any bound audience",
        ),
        (key.sign(&unmatched), "Permission denied"),
        ("not-a-jwt".to_string(), "error parsing token: "),
    ] {
        let r = login(&a, "workloads", &jwt).await;
        assert_eq!(r.status, 403, "{}", r.text());
        assert!(r.text().starts_with(why), "{} (wanted {why})", r.text());
    }
    let r = login(&a, "nope", &jwt).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (403, "ACL not found: auth method \"nope\" not found")
    );

    // (e) Deleting the method deletes its rules and the tokens its logins made.
    let l3 = login(&a, "workloads", &jwt).await;
    let s3 = l3.json()["SecretID"].as_str().expect("secret").to_string();
    let rules = call(
        "GET",
        &a.url("/v1/acl/binding-rules?authmethod=workloads"),
        mgmt,
        None,
    )
    .await;
    assert_eq!(
        rules.json().as_array().map(Vec::len),
        Some(5),
        "{}",
        rules.text()
    );
    let mine = call(
        "GET",
        &a.url("/v1/acl/tokens?authmethod=workloads"),
        mgmt,
        None,
    )
    .await;
    let n = mine.json().as_array().map_or(0, Vec::len);
    assert!(n >= 2, "the method's tokens: {}", mine.text());
    let d = call(
        "DELETE",
        &a.url("/v1/acl/auth-method/workloads"),
        mgmt,
        None,
    )
    .await;
    assert_eq!((d.status, d.text().as_str()), (200, "true"));
    let rules = call("GET", &a.url("/v1/acl/binding-rules"), mgmt, None).await;
    assert_eq!(rules.json(), json!([]));
    let gone = call("GET", &a.url("/v1/acl/token/self"), Some(&s3), None).await;
    assert_eq!((gone.status, gone.text().as_str()), (403, "ACL not found"));
    let m = call("GET", &a.url("/v1/acl/auth-method/workloads"), mgmt, None).await;
    assert_eq!(m.status, 404);
    let me = call("GET", &a.url("/v1/acl/token/self"), mgmt, None).await;
    assert_eq!(me.status, 200, "other tokens stay");
    let mine = call(
        "GET",
        &a.url("/v1/acl/tokens?authmethod=workloads"),
        mgmt,
        None,
    )
    .await;
    assert_eq!(mine.json(), json!([]), "every token of the method is gone");
    Ok(())
}

/// A JWKS endpoint on loopback serving whatever `keys` holds at `/keys`, counting its
/// fetches, and an OIDC discovery document naming it (the issuer is the server's URL);
/// returns that URL.
async fn jwks_server(keys: Arc<Mutex<Value>>, fetches: Arc<Mutex<u32>>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", l.local_addr().expect("addr"));
    let issuer = base.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (keys, fetches, issuer) = (keys.clone(), fetches.clone(), issuer.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let body = if head.starts_with("GET /.well-known/openid-configuration ") {
                    json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")}).to_string()
                } else {
                    *fetches.lock().expect("count") += 1;
                    keys.lock().expect("keys").to_string()
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    base
}

#[tokio::test]
async fn jwks_and_oidc_discovery_keys_are_fetched_and_refetched_for_a_new_key_id(
) -> anyhow::Result<()> {
    let k1 = Key::new("key-1");
    let k2 = Key::new("key-2");
    let keys = Arc::new(Mutex::new(json!({"keys": [k1.jwk()]})));
    let fetches = Arc::new(Mutex::new(0));
    let base = jwks_server(keys.clone(), fetches.clone()).await;
    let url = format!("{base}/keys");

    let root = tempfile::tempdir()?;
    let (a, root_secret) = acl_agent(root.path(), "jwks1").await?;
    let mgmt = Some(root_secret.as_str());
    let method = json!({
        "Name": "jwks", "Type": "jwt",
        "Config": {"JWKSURL": url, "BoundIssuer": ISSUER, "BoundAudiences": ["muster"],
                   "ClaimMappings": {"service": "service"}}
    });
    let m = call("PUT", &a.url("/v1/acl/auth-method"), mgmt, Some(method)).await;
    assert_eq!(m.status, 200, "{}", m.text());
    let unreachable = json!({"Name": "dead", "Type": "jwt",
                             "Config": {"JWKSURL": "http://127.0.0.1:1/jwks"}});
    let r = call(
        "PUT",
        &a.url("/v1/acl/auth-method"),
        mgmt,
        Some(unreachable),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .starts_with("Invalid Auth Method: error checking JWKSURL: "),
        "{}",
        r.text()
    );
    let rule = json!({"AuthMethod": "jwks", "BindType": "service", "BindName": "${value.service}"});
    let r = call("PUT", &a.url("/v1/acl/binding-rule"), mgmt, Some(rule)).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let r = login(&a, "jwks", &k1.sign(&claims("api"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ServiceIdentities"][0]["ServiceName"], "api");
    let before = *fetches.lock().expect("count");
    // A key the set does not have yet is refused, then found once the issuer rotates to it.
    let r = login(&a, "jwks", &k2.sign(&claims("api"))).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("failed to verify id token signature"),
        "{}",
        r.text()
    );
    *keys.lock().expect("keys") = json!({"keys": [k2.jwk()]});
    let jwt = k2.sign(&claims("api"));
    let ok = wait_until(
        "login with the rotated key",
        Duration::from_secs(10),
        || {
            let (a, jwt) = (&a, jwt.clone());
            async move { (login(a, "jwks", &jwt).await.status == 200).then_some(()) }
        },
    )
    .await;
    assert!(ok.is_ok(), "{}", a.logs());
    assert!(
        *fetches.lock().expect("count") > before,
        "the key set was fetched again"
    );
    // A known key ID does not refetch.
    let n = *fetches.lock().expect("count");
    for _ in 0..3 {
        assert_eq!(
            login(&a, "jwks", &k2.sign(&claims("api"))).await.status,
            200
        );
    }
    assert_eq!(*fetches.lock().expect("count"), n);

    // OIDC discovery: the key set the provider's document names, its issuer, and go-oidc's
    // default of RS256 unless JWTSupportedAlgs says otherwise.
    let oidc = |algs: Value| {
        json!({"Name": "oidc", "Type": "jwt", "Config": {"OIDCDiscoveryURL": base,
               "JWTSupportedAlgs": algs, "ClaimMappings": {"service": "service"}}})
    };
    let m = call(
        "PUT",
        &a.url("/v1/acl/auth-method"),
        mgmt,
        Some(oidc(json!([]))),
    )
    .await;
    assert_eq!(m.status, 200, "{}", m.text());
    let rule = json!({"AuthMethod": "oidc", "BindType": "service", "BindName": "${value.service}"});
    let r = call("PUT", &a.url("/v1/acl/binding-rule"), mgmt, Some(rule)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut from_provider = claims("api");
    from_provider["iss"] = json!(base);
    let r = login(&a, "oidc", &k2.sign(&from_provider)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        r.text(),
        "error validating signature: oidc: id token signed with unsupported algorithm, \
         expected [RS256] got \"ES256\""
    );
    let path = a.url("/v1/acl/auth-method/oidc");
    let m = call("PUT", &path, mgmt, Some(oidc(json!(["ES256"])))).await;
    assert_eq!(m.status, 200, "{}", m.text());
    let r = login(&a, "oidc", &k2.sign(&from_provider)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ServiceIdentities"][0]["ServiceName"], "api");
    let r = login(&a, "oidc", &k2.sign(&claims("api"))).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("id token issued by a different provider"),
        "{}",
        r.text()
    );
    Ok(())
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `muster` with the words of `line` (values without spaces).
fn muster(a: &Agent, line: &str) -> std::process::Output {
    let args: Vec<&str> = line.split_whitespace().collect();
    a.cli(&args)
}

#[tokio::test]
async fn cli_manages_methods_and_rules_and_logs_in_and_out() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let (a, mgmt) = acl_agent(root.path(), "cli1").await?;
    let key = Key::new("k1");
    let cfg = json!({"JWTValidationPubKeys": [key.public_pem()], "BoundIssuer": ISSUER,
                     "BoundAudiences": ["muster"], "ClaimMappings": {"service": "service"}});
    let cfg_file = root.path().join("jwt.json");
    std::fs::write(&cfg_file, cfg.to_string())?;

    let o = muster(
        &a,
        &format!(
            "acl auth-method create -token {mgmt} -type jwt -name cli-jwt -description CLI \
             -max-token-ttl 10m -config @{}",
            cfg_file.display()
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("Name:          cli-jwt\nType:          jwt\n"),
        "{out}"
    );
    assert!(out.contains("MaxTokenTTL:   10m0s\n"), "{out}");
    let o = muster(&a, &format!("acl auth-method create -token {mgmt} -name x"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Missing required '-type' flag"),
        "{}",
        stderr(&o)
    );

    let o = muster(
        &a,
        &format!(
            "acl binding-rule create -token {mgmt} -method cli-jwt -bind-type service \
             -bind-name ${{value.service}} -selector value.service==web -format json"
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rule: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(rule["BindType"], "service", "{rule}");
    let rule_id = rule["ID"].as_str().expect("id").to_string();
    let o = muster(
        &a,
        &format!("acl binding-rule read -token {mgmt} -id {rule_id}"),
    );
    assert!(
        stdout(&o).contains("BindName:     ${value.service}\n"),
        "{}",
        stdout(&o)
    );
    let o = muster(
        &a,
        &format!("acl binding-rule list -token {mgmt} -method cli-jwt"),
    );
    assert!(
        stdout(&o).starts_with(&format!("{rule_id}:\n")),
        "{}",
        stdout(&o)
    );
    let o = muster(&a, &format!("acl auth-method list -token {mgmt}"));
    assert!(
        stdout(&o).contains("cli-jwt:\n   Type:         jwt\n"),
        "{}",
        stdout(&o)
    );

    let jwt_file = root.path().join("jwt");
    std::fs::write(&jwt_file, key.sign(&claims("web")))?;
    let sink = root.path().join("token");
    let o = muster(
        &a,
        &format!(
            "login -method cli-jwt -bearer-token-file {} -token-sink-file {} -meta host=h1",
            jwt_file.display(),
            sink.display()
        ),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let secret = std::fs::read_to_string(&sink)?;
    let me = call("GET", &a.url("/v1/acl/token/self"), Some(&secret), None).await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["ServiceIdentities"][0]["ServiceName"], "web");
    assert_eq!(me.json()["AuthMethod"], "cli-jwt");
    assert!(
        me.json()["ExpirationTime"].is_string(),
        "MaxTokenTTL applies"
    );
    let o = muster(&a, &format!("acl token read -token {secret} -self"));
    assert!(
        stdout(&o).contains("Auth Method:      cli-jwt"),
        "{}",
        stdout(&o)
    );

    let o = muster(&a, &format!("logout -token {secret}"));
    assert!(o.status.success(), "{}", stderr(&o));
    let me = call("GET", &a.url("/v1/acl/token/self"), Some(&secret), None).await;
    assert_eq!(me.status, 403);
    let o = muster(&a, &format!("logout -token {mgmt}"));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("Error destroying token") && err.contains("Permission denied"),
        "{err}"
    );

    let o = muster(
        &a,
        &format!("acl auth-method delete -token {mgmt} -name cli-jwt"),
    );
    assert_eq!(stdout(&o), "Auth-method \"cli-jwt\" deleted successfully\n");
    let o = muster(
        &a,
        &format!("acl binding-rule read -token {mgmt} -id {rule_id}"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Binding rule not found with ID"),
        "{}",
        stderr(&o)
    );
    Ok(())
}
