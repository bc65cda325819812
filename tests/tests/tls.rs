//! TLS end to end, with real agents and certificates made by `muster tls ca create` and
//! `muster tls cert create`: HTTPS with and without a client certificate, the CLI over HTTPS,
//! servers over mutual TLS (and one with another CA's certificate kept out), and a
//! certificate rotated by SIGHUP.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use muster_tests::{muster_bin, single_server, start_servers, wait_until, Agent};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// `muster ARGS` in `dir`, with none of the variables that point commands at an agent.
fn muster_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(muster_bin());
    for v in [
        "MUSTER_HTTP_ADDR",
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_SSL",
        "CONSUL_CACERT",
        "CONSUL_CAPATH",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_TLS_SERVER_NAME",
        "CONSUL_HTTP_SSL_VERIFY",
        "CONSUL_HTTP_TOKEN",
    ] {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied())
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run muster")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA in `dir`, with server, client and CLI certificates: `dc1-server-consul-0.pem` etc.
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let out = ok(muster_in(dir, &["tls", "ca", "create"], &[]));
    assert_eq!(
        out,
        "==> Saved consul-agent-ca.pem\n==> Saved consul-agent-ca-key.pem\n"
    );
    let out = ok(muster_in(dir, &["tls", "cert", "create", "-server"], &[]));
    assert!(
        out.starts_with("==> WARNING: Server Certificates grants authority"),
        "{out}"
    );
    assert!(out.ends_with(
        "==> Using consul-agent-ca.pem and consul-agent-ca-key.pem\n\
         ==> Saved dc1-server-consul-0.pem\n==> Saved dc1-server-consul-0-key.pem\n"
    ));
    let out = ok(muster_in(dir, &["tls", "cert", "create", "-client"], &[]));
    assert!(
        out.ends_with("==> Saved dc1-client-consul-0-key.pem\n"),
        "{out}"
    );
    ok(muster_in(dir, &["tls", "cert", "create", "-cli"], &[]));
    for f in [
        "dc1-server-consul-0.pem",
        "dc1-client-consul-0.pem",
        "dc1-cli-consul-0-key.pem",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
}

fn certs_of(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("open pem")
        .collect::<Result<_, _>>()
        .expect("pem")
}

/// A rustls client config trusting `dir`'s CA, presenting `client` (a file stem) if given.
fn client_config(dir: &Path, client: Option<&str>) -> Arc<rustls::ClientConfig> {
    client_config_from(dir, client.map(|stem| (dir, stem)))
}

/// A rustls client config trusting `ca_dir`'s CA, presenting `client` (a folder and a file stem)
/// if given.
fn client_config_from(ca_dir: &Path, client: Option<(&Path, &str)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_of(&ca_dir.join("consul-agent-ca.pem")) {
        roots.add(c).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some((dir, stem)) => builder
            .with_client_auth_cert(
                certs_of(&dir.join(format!("{stem}.pem"))),
                PrivateKeyDer::from_pem_file(dir.join(format!("{stem}-key.pem"))).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn https_client(dir: &Path, client: Option<&str>) -> reqwest::Client {
    client_of(client_config(dir, client))
}

fn client_of(config: Arc<rustls::ClientConfig>) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls((*config).clone())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A config file in `dir` named `name` with `json`.
fn config_file(dir: &Path, name: &str, json: serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, json.to_string()).expect("write config");
    path
}

/// HTTPS with `verify_incoming`, certificates from `dir`: server certificate `server`.
fn https_config(dir: &Path, server: &str) -> serde_json::Value {
    let f = |n: &str| dir.join(n).display().to_string();
    serde_json::json!({
        "ports": {"https": 0},
        "tls": {"defaults": {
            "ca_file": f("consul-agent-ca.pem"),
            "cert_file": f(&format!("{server}.pem")),
            "key_file": f(&format!("{server}-key.pem")),
            "verify_incoming": true,
        }}
    })
}

/// Certificates in `tmp/certs` and a config file `name` made from them by `config`; returns
/// the certificates' folder and the config file's path.
fn setup(
    tmp: &Path,
    name: &str,
    config: fn(&Path, &str) -> serde_json::Value,
) -> (PathBuf, String) {
    let certs = tmp.join("certs");
    make_certs(&certs);
    let cfg = config_file(tmp, name, config(&certs, "dc1-server-consul-0"));
    (certs, cfg.display().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_requires_a_client_certificate_with_verify_incoming() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (certs, cfg) = setup(tmp.path(), "tls.json", https_config);
    let a = single_server(tmp.path(), "s1", &["-config-file", &cfg]).await?;
    let https = a.https.expect("HTTPS port in the banner");
    let url = format!("https://{https}/v1/kv/k");
    let r = https_client(&certs, Some("dc1-client-consul-0"))
        .put(&url)
        .body("v")
        .send()
        .await?;
    assert_eq!(r.status(), 200, "{}", a.logs());
    let r = https_client(&certs, Some("dc1-client-consul-0"))
        .get(format!("{url}?raw"))
        .send()
        .await?;
    assert_eq!(r.text().await?, "v");
    // No client certificate: the handshake is refused.
    let refused = https_client(&certs, None).get(&url).send().await;
    assert!(refused.is_err(), "answered without a client certificate");
    // A certificate from another CA is refused too.
    let other = tmp.path().join("other");
    make_certs(&other);
    let foreign = client_config_from(&certs, Some((&other, "dc1-client-consul-0")));
    let r = client_of(foreign).get(&url).send().await;
    assert!(r.is_err(), "answered a certificate from another CA");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_talks_https_with_consul_variables_and_flags() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (certs, cfg) = setup(tmp.path(), "tls.json", https_config);
    let a = single_server(tmp.path(), "s1", &["-config-file", &cfg]).await?;
    let https = a.https.expect("HTTPS port");
    let addr = format!("https://{https}");
    let f = |n: &str| certs.join(n).display().to_string();
    let (ca, cert, key) = (
        f("consul-agent-ca.pem"),
        f("dc1-cli-consul-0.pem"),
        f("dc1-cli-consul-0-key.pem"),
    );
    let env = [
        ("CONSUL_HTTP_ADDR", addr.as_str()),
        ("CONSUL_CACERT", ca.as_str()),
        ("CONSUL_CLIENT_CERT", cert.as_str()),
        ("CONSUL_CLIENT_KEY", key.as_str()),
    ];
    let out = ok(muster_in(tmp.path(), &["kv", "put", "k", "v1"], &env));
    assert_eq!(out, "Success! Data written to: k\n");
    // The flags instead of the variables; CONSUL_HTTP_SSL makes a bare address HTTPS.
    let bare = https.to_string();
    let out = ok(muster_in(
        tmp.path(),
        &[
            "kv",
            "get",
            "-http-addr",
            &bare,
            "-ca-file",
            &ca,
            "-client-cert",
            &cert,
            "-client-key",
            &key,
            "-tls-server-name",
            "server.dc1.consul",
            "k",
        ],
        &[("CONSUL_HTTP_SSL", "true")],
    ));
    assert_eq!(out, "v1\n");
    // CONSUL_CAPATH: a directory holding the CA.
    let capath = tmp.path().join("capath");
    std::fs::create_dir(&capath)?;
    std::fs::copy(&ca, capath.join("ca.pem"))?;
    let capath = capath.display().to_string();
    let env_path = [
        ("CONSUL_HTTP_ADDR", addr.as_str()),
        ("CONSUL_CAPATH", capath.as_str()),
        ("CONSUL_CLIENT_CERT", cert.as_str()),
        ("CONSUL_CLIENT_KEY", key.as_str()),
    ];
    assert_eq!(
        ok(muster_in(tmp.path(), &["kv", "get", "k"], &env_path)),
        "v1\n"
    );
    // Without a client certificate the agent refuses the connection.
    let out = muster_in(
        tmp.path(),
        &["kv", "get", "k"],
        &[("CONSUL_HTTP_ADDR", &addr), ("CONSUL_CACERT", &ca)],
    );
    assert!(!out.status.success());
    // Without the CA the agent's certificate is not trusted; CONSUL_HTTP_SSL_VERIFY=false
    // skips that check.
    let no_ca = [
        ("CONSUL_HTTP_ADDR", addr.as_str()),
        ("CONSUL_CLIENT_CERT", cert.as_str()),
        ("CONSUL_CLIENT_KEY", key.as_str()),
    ];
    let out = muster_in(tmp.path(), &["kv", "get", "k"], &no_ca);
    assert!(!out.status.success());
    let unverified = [&no_ca[..], &[("CONSUL_HTTP_SSL_VERIFY", "false")]].concat();
    let out = muster_in(tmp.path(), &["kv", "get", "k"], &unverified);
    assert_eq!(ok(out), "v1\n");
    // A name the certificate does not carry is refused.
    let wrong_name = [&env[..], &[("CONSUL_TLS_SERVER_NAME", "server.dc2.consul")]].concat();
    let out = muster_in(tmp.path(), &["kv", "get", "k"], &wrong_name);
    assert!(!out.status.success());
    let right_name = [&env[..], &[("CONSUL_TLS_SERVER_NAME", "server.dc1.consul")]].concat();
    assert_eq!(
        ok(muster_in(tmp.path(), &["kv", "get", "k"], &right_name)),
        "v1\n"
    );
    Ok(())
}

/// Server RPC over mutual TLS with `verify_server_hostname`, certificates from `dir`.
fn rpc_config(dir: &Path, server: &str) -> serde_json::Value {
    let f = |n: &str| dir.join(n).display().to_string();
    serde_json::json!({
        "ca_file": f("consul-agent-ca.pem"),
        "cert_file": f(&format!("{server}.pem")),
        "key_file": f(&format!("{server}-key.pem")),
        "verify_incoming": true,
        "verify_outgoing": true,
        "verify_server_hostname": true,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_speak_mutual_tls_and_keep_out_another_cas_server() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (_, cfg) = setup(tmp.path(), "rpc.json", rpc_config);
    let servers = start_servers(tmp.path(), 3, &["-config-file", &cfg]).await?;
    // A write on each server reaches the leader over TLS and is read back everywhere.
    for (i, s) in servers.iter().enumerate() {
        let r = muster_tests::put(&s.url(&format!("/v1/kv/k{i}")), b"v").await?;
        assert_eq!(r.status, 200, "{}", s.logs());
    }
    for s in &servers {
        let r = muster_tests::get(&s.url("/v1/kv/k2?raw")).await?;
        assert_eq!(r.body, b"v");
    }
    // A server whose certificate comes from another CA joins gossip but never Raft.
    let other = tmp.path().join("other");
    make_certs(&other);
    let cfg = config_file(
        tmp.path(),
        "other.json",
        rpc_config(&other, "dc1-server-consul-0"),
    );
    let cfg = cfg.display().to_string();
    let join = servers[0].serf.to_string();
    let intruder = Agent::start(
        "s4",
        &tmp.path().join("s4"),
        &["-server", "-retry-join", &join, "-config-file", &cfg],
    )?;
    let first = &servers[0];
    wait_until("s4 in the gossip pool", Duration::from_secs(15), || async {
        let r = muster_tests::get(&first.url("/v1/agent/members"))
            .await
            .ok()?;
        r.text().contains("\"s4\"").then_some(())
    })
    .await?;
    // The leader tries to replicate to it, and the handshake fails on the CA both ways.
    let s4_rpc = intruder.rpc.clone().unwrap_or_default();
    wait_until(
        "the leader refused by s4's certificate",
        Duration::from_secs(15),
        || {
            let logs: String = servers.iter().map(Agent::logs).collect();
            let refused = logs.lines().any(|l| {
                l.contains(&s4_rpc) && l.contains("invalid peer certificate: UnknownIssuer")
            });
            async move { refused.then_some(()) }
        },
    )
    .await?;
    wait_until(
        "s4 refusing the leader",
        Duration::from_secs(10),
        || async {
            let logs = intruder.logs();
            logs.contains("server RPC TLS handshake failed")
                .then_some(())
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // It never learns of a leader nor receives any data; the cluster goes on writing.
    let leader = muster_tests::get(&intruder.url("/v1/status/leader")).await?;
    assert_eq!(leader.json(), "", "the intruder found a leader");
    let r = muster_tests::get(&intruder.url("/v1/kv/k0?stale")).await?;
    assert_eq!(r.status, 404, "the intruder has replicated data");
    let r = muster_tests::put(&servers[1].url("/v1/kv/after"), b"v").await?;
    assert_eq!(r.status, 200);
    // Nor is it made a voter that the quorum would then need.
    let peers = muster_tests::get(&servers[1].url("/v1/status/peers")).await?;
    let peers = peers.json();
    assert_eq!(peers.as_array().map(Vec::len), Some(3), "{peers}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_server_hostname_keeps_out_a_client_certificate_and_clients_forward_over_tls(
) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (certs, cfg) = setup(tmp.path(), "rpc.json", rpc_config);
    let s1 = single_server(tmp.path(), "s1", &["-config-file", &cfg]).await?;
    let join = s1.serf.to_string();
    // A client agent with a client certificate forwards its writes and reads over TLS.
    let client_cfg = config_file(
        tmp.path(),
        "client.json",
        rpc_config(&certs, "dc1-client-consul-0"),
    );
    let client_cfg = client_cfg.display().to_string();
    let c1 = Agent::start(
        "c1",
        &tmp.path().join("c1"),
        &["-retry-join", &join, "-config-file", &client_cfg],
    )?;
    wait_until(
        "a write through the client agent",
        Duration::from_secs(15),
        || async {
            let r = muster_tests::put(&c1.url("/v1/kv/via-client"), b"v")
                .await
                .ok()?;
            (r.status == 200).then_some(())
        },
    )
    .await?;
    let r = muster_tests::get(&c1.url("/v1/kv/via-client?raw")).await?;
    assert_eq!(r.body, b"v");
    // A server presenting that client certificate (same CA, but named client.dc1.consul) is
    // refused by the leader's hostname check: it never receives the data.
    let s2 = Agent::start(
        "s2",
        &tmp.path().join("s2"),
        &["-server", "-retry-join", &join, "-config-file", &client_cfg],
    )?;
    let s2_rpc = s2.rpc.clone().unwrap_or_default();
    wait_until(
        "the leader refusing s2's name",
        Duration::from_secs(15),
        || {
            let refused = s1.logs().lines().any(|l| {
                l.contains(&s2_rpc) && l.contains("invalid peer certificate") && l.contains("Name")
            });
            async move { refused.then_some(()) }
        },
    )
    .await?;
    let r = muster_tests::get(&s2.url("/v1/kv/via-client?stale")).await?;
    assert_eq!(r.status, 404, "s2 received replicated data");
    // A client agent without TLS is refused: verify_incoming requires it.
    let c2 = Agent::start("c2", &tmp.path().join("c2"), &["-retry-join", &join])?;
    wait_until(
        "the plain client refused",
        Duration::from_secs(15),
        || async {
            let r = muster_tests::put(&c2.url("/v1/kv/plain"), b"v")
                .await
                .ok()?;
            assert_ne!(r.status, 200, "a plain client's write was applied");
            let logs = s1.logs();
            logs.contains("refusing a plain server RPC connection")
                .then_some(())
        },
    )
    .await?;
    Ok(())
}

/// An HTTP/1.1 request on an open TLS connection; the response's status line.
async fn request_on<S>(s: &mut BufReader<S>, host: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!("GET /v1/status/leader HTTP/1.1\r\nhost: {host}\r\n\r\n");
    s.get_mut().write_all(req.as_bytes()).await.expect("write");
    let mut status = String::new();
    s.read_line(&mut status).await.expect("status line");
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        // A closed connection ends the head too (and its status line is empty).
        if s.read_line(&mut h).await.expect("header") == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).await.expect("body");
    status
}

/// A TLS connection to `addr` (as `localhost`), if the handshake succeeds.
async fn try_connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from("localhost").ok()?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .ok()
}

/// A TLS connection to `addr` and the certificate the server presented.
async fn connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (
    BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    CertificateDer<'static>,
) {
    let tls = try_connect(addr, config).await.expect("handshake");
    let cert = tls.get_ref().1.peer_certificates().expect("certs")[0].clone();
    (BufReader::new(tls), cert.into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rotates_the_certificate_without_dropping_connections() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (certs, cfg) = setup(tmp.path(), "tls.json", https_config);
    let path = PathBuf::from(&cfg);
    let a = single_server(tmp.path(), "s1", &["-config-file", &cfg]).await?;
    let https = a.https.expect("HTTPS port");
    let client = client_config(&certs, Some("dc1-client-consul-0"));
    let old = certs_of(&certs.join("dc1-server-consul-0.pem")).remove(0);
    let (mut kept, seen) = connect(https, client.clone()).await;
    assert_eq!(seen, old);
    assert_eq!(
        request_on(&mut kept, "localhost").await,
        "HTTP/1.1 200 OK\r\n"
    );

    // A new server certificate, named in the config, and SIGHUP.
    ok(muster_in(
        &certs,
        &["tls", "cert", "create", "-server"],
        &[],
    ));
    let new = certs_of(&certs.join("dc1-server-consul-1.pem")).remove(0);
    assert_ne!(new, old);
    std::fs::write(
        &path,
        https_config(&certs, "dc1-server-consul-1").to_string(),
    )?;
    let pid = a.pid().expect("pid").to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()?
        .success());
    wait_until("the new certificate", Duration::from_secs(10), || {
        let client = client.clone();
        let new = new.clone();
        async move { (connect(https, client).await.1 == new).then_some(()) }
    })
    .await?;
    // The connection made before the reload still serves, with the old certificate.
    assert_eq!(
        request_on(&mut kept, "localhost").await,
        "HTTP/1.1 200 OK\r\n"
    );
    assert_eq!(
        kept.get_ref()
            .get_ref()
            .1
            .peer_certificates()
            .expect("certs")[0],
        old
    );

    // A new CA: its certificates are served and required after the next reload.
    let certs2 = tmp.path().join("certs2");
    make_certs(&certs2);
    std::fs::write(
        &path,
        https_config(&certs2, "dc1-server-consul-0").to_string(),
    )?;
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()?
        .success());
    let client2 = client_config(&certs2, Some("dc1-client-consul-0"));
    let new2 = certs_of(&certs2.join("dc1-server-consul-0.pem")).remove(0);
    wait_until("the new CA's certificate", Duration::from_secs(10), || {
        let client2 = client2.clone();
        let new2 = new2.clone();
        async move {
            let tls = try_connect(https, client2).await?;
            (tls.get_ref().1.peer_certificates()?[0] == new2).then_some(())
        }
    })
    .await?;
    let (mut fresh, _) = connect(https, client2.clone()).await;
    assert_eq!(
        request_on(&mut fresh, "localhost").await,
        "HTTP/1.1 200 OK\r\n"
    );
    // A client certificate of the old CA is refused now.
    let old_ca = client_config_from(&certs2, Some((&certs, "dc1-client-consul-0")));
    let old_ca = client_of(old_ca)
        .get(format!("https://{https}/v1/status/leader"))
        .send()
        .await;
    assert!(
        old_ca.is_err(),
        "a client certificate of the old CA was accepted"
    );
    let (certs, new, client) = (certs2, new2, client2);

    // A reload naming a missing file fails and keeps the running certificate.
    let mut broken = https_config(&certs, "dc1-server-consul-0");
    broken["tls"]["defaults"]["cert_file"] = "/nonexistent.pem".into();
    std::fs::write(&path, broken.to_string())?;
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()?
        .success());
    wait_until(
        "the failed reload logged",
        Duration::from_secs(10),
        || async { a.logs().contains("/nonexistent.pem").then_some(()) },
    )
    .await?;
    assert_eq!(connect(https, client.clone()).await.1, new);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn https_keeps_the_connection_cap_and_closes_stalled_handshakes() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let (certs, _) = setup(tmp.path(), "tls.json", https_config);
    let mut cfg = https_config(&certs, "dc1-server-consul-0");
    cfg["limits"] = serde_json::json!({
        "http_max_conns_per_client": 2,
        "https_handshake_timeout": "500ms",
    });
    let cfg = config_file(tmp.path(), "limits.json", cfg)
        .display()
        .to_string();
    let a = single_server(tmp.path(), "s1", &["-config-file", &cfg]).await?;
    let https = a.https.expect("HTTPS port");
    let client = client_config(&certs, Some("dc1-client-consul-0"));
    let (mut c1, _) = connect(https, client.clone()).await;
    let (mut c2, _) = connect(https, client.clone()).await;
    assert_eq!(
        request_on(&mut c1, "localhost").await,
        "HTTP/1.1 200 OK\r\n"
    );
    assert_eq!(
        request_on(&mut c2, "localhost").await,
        "HTTP/1.1 200 OK\r\n"
    );
    // The third is closed before its handshake.
    let third = try_connect(https, client.clone()).await;
    assert!(third.is_none(), "a third TLS connection was accepted");
    drop(c1);
    // A client that never starts its handshake is closed after https_handshake_timeout,
    // which frees its slot too.
    let mut stalled = tokio::net::TcpStream::connect(https).await?;
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a stalled handshake was not closed"
    );
    wait_until("a slot freed", Duration::from_secs(5), || {
        let client = client.clone();
        async move {
            let tls = try_connect(https, client).await?;
            let mut s = BufReader::new(tls);
            (request_on(&mut s, "localhost").await == "HTTP/1.1 200 OK\r\n").then_some(())
        }
    })
    .await?;
    Ok(())
}

#[test]
fn a_missing_certificate_fails_the_start_naming_file_and_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cfg = config_file(
        tmp.path(),
        "tls.json",
        serde_json::json!({"ports": {"https": 0}, "tls": {"https": {
            "cert_file": "/nonexistent/cert.pem", "key_file": "/nonexistent/key.pem"}}}),
    );
    let cfg_s = cfg.display().to_string();
    let data = tmp.path().join("d").display().to_string();
    let out = Command::new(muster_bin())
        .args(["agent", "-data-dir", &data, "-config-file", &cfg_s])
        .args(["-bind", "127.0.0.1", "-http-port", "0", "-dns-port", "-1"])
        .args(["-serf-lan-port", "0"])
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "config file {cfg_s}: key \"tls.https.cert_file\": cannot load /nonexistent/cert.pem"
        )),
        "{err}"
    );
}

/// A rustls client trusting `dir`'s CA that speaks only TLS 1.2 with `suites` (names).
fn tls12_client(dir: &Path, suites: &[&str]) -> reqwest::Client {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|c| suites.contains(&format!("{:?}", c.suite()).as_str()));
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_of(&dir.join("consul-agent-ca.pem")) {
        roots.add(c).expect("root");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    client_of(Arc::new(config))
}

/// `tls_min_version` and `tls_cipher_suites` as Consul's: a TLS 1.2 client is refused by a
/// `tls13` listener, a suite left off the list is refused, and a list of nothing this agent
/// speaks stops the start with a clear message.
#[tokio::test(flavor = "multi_thread")]
async fn tls_min_version_and_cipher_suites_are_applied() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let certs = tmp.path().join("certs");
    make_certs(&certs);
    let f = |n: &str| certs.join(n).display().to_string();
    let conf = |extra: serde_json::Value| {
        let mut https = serde_json::json!({
            "ca_file": f("consul-agent-ca.pem"),
            "cert_file": f("dc1-server-consul-0.pem"),
            "key_file": f("dc1-server-consul-0-key.pem"),
        });
        for (k, v) in extra.as_object().expect("object") {
            https[k] = v.clone();
        }
        serde_json::json!({"ports": {"https": 0}, "tls": {"https": https}})
    };
    const ECDSA_128: &str = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256";
    const ECDSA_256: &str = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384";

    let cfg = config_file(
        tmp.path(),
        "v13.json",
        conf(serde_json::json!({"tls_min_version": "tls13"})),
    );
    let cfg = cfg.display().to_string();
    let a = single_server(tmp.path(), "v13", &["-config-file", &cfg]).await?;
    let url = format!("https://{}/v1/status/leader", a.https.expect("https"));
    let r = https_client(&certs, None).get(&url).send().await?;
    assert_eq!(r.status(), 200);
    let old = tls12_client(&certs, &[ECDSA_128, ECDSA_256])
        .get(&url)
        .send()
        .await;
    assert!(
        old.is_err(),
        "a TLS 1.2 client was served by a tls13 listener"
    );

    let cfg = config_file(
        tmp.path(),
        "suites.json",
        conf(
            serde_json::json!({"tls_cipher_suites": format!("{ECDSA_128},TLS_RSA_WITH_RC4_128_SHA")}),
        ),
    );
    let cfg = cfg.display().to_string();
    let b = single_server(tmp.path(), "suites", &["-config-file", &cfg]).await?;
    let url = format!("https://{}/v1/status/leader", b.https.expect("https"));
    let r = tls12_client(&certs, &[ECDSA_128]).get(&url).send().await?;
    assert_eq!(r.status(), 200);
    let r = tls12_client(&certs, &[ECDSA_256]).get(&url).send().await;
    assert!(
        r.is_err(),
        "a suite left off tls_cipher_suites was negotiated"
    );
    assert!(
        b.logs()
            .contains("tls_cipher_suites lists suites this agent does not offer"),
        "{}",
        b.logs()
    );

    let cfg = config_file(
        tmp.path(),
        "none.json",
        conf(serde_json::json!({"tls_cipher_suites": "TLS_RSA_WITH_RC4_128_SHA"})),
    );
    let data = tmp.path().join("none").display().to_string();
    let out = Command::new(muster_bin())
        .args(["agent", "-data-dir", &data, "-config-file"])
        .arg(&cfg)
        .args(["-bind", "127.0.0.1", "-http-port", "0", "-dns-port", "-1"])
        .args(["-serf-lan-port", "0"])
        .stdin(Stdio::null())
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "tls.https: tls_cipher_suites names none this agent supports; choose from TLS_ECDHE_"
        ),
        "{err}"
    );
    Ok(())
}
