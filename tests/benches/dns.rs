//! DNS benchmark: dnsperf (Debian's package) against Muster and against dnsmasq answering the
//! same names from a hosts file and `srv-host` lines, in the same run.
//!
//! ```sh
//! cargo build --release --bin muster
//! cargo bench -p muster-tests --bench dns [-- --secs 10]
//! ```
//!
//! Names: 100 services x 3 instances; the query file mixes `<svc>.service.consul` A,
//! `<node>.node.consul` A, `<tag>.<svc>.service.consul` A and `_<svc>._tcp.service.consul` SRV.
//! Full speed with `dnsperf -c 20 -T 2 -q 100`, then latency at a fixed 5,000 QPS.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use muster_tests::{put, wait_until, Agent};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs dnsperf; returns (QPS, average latency ms, lost queries).
fn dnsperf(
    port: u16,
    file: &std::path::Path,
    secs: u64,
    rate: Option<u32>,
) -> anyhow::Result<(f64, f64, u64)> {
    let mut cmd = Command::new("dnsperf");
    cmd.args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(file);
    cmd.args(["-c", "20", "-T", "2", "-q", "100", "-l", &secs.to_string()]);
    if let Some(r) = rate {
        cmd.args(["-Q", &r.to_string()]);
    }
    let out = cmd.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |label: &str| -> f64 {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Ok((
        num("Queries per second"),
        num("Average Latency (s)") * 1000.0,
        num("Queries lost") as u64,
    ))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: u64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
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
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _dnsmasq = Proc(
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let muster_port = a.dns.expect("dns").port();
    println!("== DNS: dnsperf -c 20 -T 2 -q 100, {secs} s, 100 services x 3 instances (A, node A, tag A, SRV)");
    let (mq, ml, mlost) = dnsperf(muster_port, &qfile, secs, None)?;
    let (dq, dl, dlost) = dnsperf(port, &qfile, secs, None)?;
    println!("  muster   {mq:>9.0} QPS  avg {ml:.3} ms  lost {mlost}");
    println!("  dnsmasq  {dq:>9.0} QPS  avg {dl:.3} ms  lost {dlost}");
    println!("  ratio muster/dnsmasq: {:.2}x", mq / dq);
    let (_, m5, m5lost) = dnsperf(muster_port, &qfile, secs.min(5), Some(5000))?;
    let (_, d5, _) = dnsperf(port, &qfile, secs.min(5), Some(5000))?;
    println!("  at 5,000 QPS: muster avg {m5:.3} ms (lost {m5lost}), dnsmasq avg {d5:.3} ms");
    Ok(())
}
