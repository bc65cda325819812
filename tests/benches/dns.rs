//! DNS benchmark: dnsperf (Debian's package) against Muster and against dnsmasq answering the
//! same names from a hosts file and `srv-host` lines, in the same run.
//!
//! ```sh
//! cargo build --profile dist --bin muster    # the benches run target/dist/muster
//! cargo bench -p muster-tests --bench dns [-- --secs 10]
//! ```
//!
//! Names: 100 services x 3 instances; the query file mixes `<svc>.service.consul` A,
//! `<node>.node.consul` A, `<tag>.<svc>.service.consul` A and `_<svc>._tcp.service.consul` SRV.
//! Full speed with `dnsperf -c 20 -T 2 -q 100`, then latency at a fixed 5,000 QPS.

use std::process::{Command, Stdio};
use std::time::Duration;

use muster_tests::bench::dnsperf::{dnsperf, report};
use muster_tests::bench::{cpu_ticks, Proc};
use muster_tests::{put, wait_until, Agent};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = muster_tests::bench::start(10)?;
    let secs = cli.secs;
    let root = tempfile::tempdir()?;
    let a = Agent::start(
        "dnsbench",
        &root.path().join("a"),
        &["-server", "-bootstrap-expect", "1", "-log-level", "warn"],
    )?;
    wait_until("leader", Duration::from_secs(10), || {
        muster_tests::leader_of(&a)
    })
    .await?;
    let mut hosts = String::new();
    let mut conf = String::new();
    let mut queries = String::new();
    for s in 0..100 {
        for i in 0..3 {
            let node = format!("n{s:03}{i}");
            let ip = format!("10.{}.{}.{}", s / 250, s % 250, i + 1);
            let tag = if i == 0 { "primary" } else { "replica" };
            let body = serde_json::json!({"Node": node, "Address": ip,
                "Service": {"Service": format!("svc{s:03}"), "Tags": [tag], "Port": 8000 + i}});
            let r = put(&a.url("/v1/catalog/register"), body.to_string().as_bytes()).await?;
            anyhow::ensure!(r.status == 200, "register failed: {}", r.text());
            // dnsmasq answers the same names from a hosts file and srv-host lines.
            hosts.push_str(&format!(
                "{ip} {node}.node.consul svc{s:03}.service.consul {tag}.svc{s:03}.service.consul\n"
            ));
            conf.push_str(&format!(
                "srv-host=_svc{s:03}._tcp.service.consul,{node}.node.consul,{},1,1\n",
                8000 + i
            ));
        }
        queries.push_str(&format!("svc{s:03}.service.consul A\nn{s:03}0.node.consul A\nprimary.svc{s:03}.service.consul A\n_svc{s:03}._tcp.service.consul SRV\n"));
    }
    let qfile = root.path().join("queries.txt");
    std::fs::write(&qfile, queries)?;
    let hosts_file = root.path().join("hosts");
    std::fs::write(&hosts_file, hosts)?;
    let conf_file = root.path().join("dnsmasq.conf");
    std::fs::write(&conf_file, conf)?;
    let port = muster_tests::free_port()?;
    let mut dnsmasq = Proc(
        Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--conf-file={}", conf_file.display()))
            .arg(format!("--addn-hosts={}", hosts_file.display()))
            .arg(format!(
                "--pid-file={}",
                root.path().join("dnsmasq.pid").display()
            ))
            .args(["--cache-size=10000", "--local=/consul/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_until("dnsmasq listening", Duration::from_secs(5), || async {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then_some(())
    })
    .await?;
    anyhow::ensure!(
        dnsmasq.0.try_wait()?.is_none(),
        "dnsmasq exited (port {port} taken?)"
    );
    let muster_port = a.dns.expect("dns").port();
    println!("== DNS: dnsperf -c 20 -T 2 -q 100, {secs} s, 100 services x 3 instances (A, node A, tag A, SRV)");
    let m = dnsperf(muster_port, &qfile, secs, None)?;
    let d = dnsperf(port, &qfile, secs, None)?;
    report("muster", &m);
    report("dnsmasq", &d);
    println!("  ratio muster/dnsmasq: {:.2}x", m.qps / d.qps);
    println!("== at a fixed 5,000 QPS");
    report(
        "muster",
        &dnsperf(muster_port, &qfile, secs.min(5), Some(5000))?,
    );
    report("dnsmasq", &dnsperf(port, &qfile, secs.min(5), Some(5000))?);
    client_agents(&a, &qfile, root.path(), secs.min(5)).await?;
    drop(a);
    failover(&qfile, root.path()).await
}

/// The same queries against a client agent, without and with `dns_config.use_cache`, and the
/// server CPU each run cost.
async fn client_agents(
    server: &Agent,
    qfile: &std::path::Path,
    root: &std::path::Path,
    secs: u64,
) -> anyhow::Result<()> {
    let pid = server.pid().ok_or_else(|| anyhow::anyhow!("server pid"))?;
    println!("== client agent, dnsperf -c 20 -T 2 -q 100, {secs} s; server CPU during the run");
    for use_cache in [false, true] {
        let name = format!("client-cache-{use_cache}");
        let cfg = root.join(format!("{name}.json"));
        let conf = serde_json::json!({"dns_config": {"use_cache": use_cache}});
        std::fs::write(&cfg, conf.to_string())?;
        let c = Agent::start(
            &name,
            &root.join(&name),
            &[
                "-retry-join",
                &server.serf.to_string(),
                "-config-file",
                &cfg.display().to_string(),
                "-log-level",
                "warn",
            ],
        )?;
        wait_until("client found the server", Duration::from_secs(15), || {
            muster_tests::leader_of(&c)
        })
        .await?;
        let port = c.dns.expect("dns").port();
        // Warm up: every name asked once, so the cached run starts with its watchers set.
        dnsperf(port, qfile, 1, None)?;
        let t0 = cpu_ticks(pid);
        let run = dnsperf(port, qfile, secs, None)?;
        let server_cpu = (cpu_ticks(pid) - t0) as f64 / 100.0 / secs as f64;
        report(&format!("use_cache={use_cache}"), &run);
        println!("    server CPU {:.0}% of a core", server_cpu * 100.0);
    }
    Ok(())
}

/// dnsperf at 5,000 QPS against a follower of a 3-server cluster while its leader is killed
/// (`kill -9`) two seconds in: every query must still be answered.
async fn failover(qfile: &std::path::Path, root: &std::path::Path) -> anyhow::Result<()> {
    let mut servers = muster_tests::start_servers(&root.join("cluster"), 3, &[]).await?;
    for s in 0..100 {
        for i in 0..3 {
            let body = serde_json::json!({"Node": format!("n{s:03}{i}"),
                "Address": format!("10.{}.{}.{}", s / 250, s % 250, i + 1),
                "Service": {"Service": format!("svc{s:03}"), "Tags": [if i == 0 { "primary" } else { "replica" }], "Port": 8000 + i}});
            let r = put(
                &servers[0].url("/v1/catalog/register"),
                body.to_string().as_bytes(),
            )
            .await?;
            anyhow::ensure!(r.status == 200, "register failed: {}", r.text());
        }
    }
    let leader = muster_tests::wait_for_agreed_leader(&servers, Duration::from_secs(10))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no leader among the servers"))?;
    let follower = (leader + 1) % 3;
    let port = servers[follower].dns.expect("dns").port();
    let qfile = qfile.to_path_buf();
    let run = tokio::task::spawn_blocking(move || dnsperf(port, &qfile, 6, Some(5000)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    servers[leader].kill9();
    let r = run.await??;
    println!("== leader kill -9 two seconds into 6 s of 5,000 QPS against a follower");
    report("muster", &r);
    Ok(())
}
