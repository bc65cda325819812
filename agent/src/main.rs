//! `muster`: the agent and its client commands in one binary.

use anyhow::anyhow;
use muster_agent::{commands, config, flags, VERSION};
use tokio_util::sync::CancellationToken;

const USAGE: &str = "Usage: muster <command> [args]

Commands:
    agent        Runs a Muster agent
    members      Lists the members of the cluster
    join         Tells the local agent to join a cluster
    leave        Gracefully leaves the cluster and shuts the local agent down
    force-leave  Forces a member of the cluster to enter the \"left\" state
    kv           Reads and writes the KV store (get, put, delete, export, import)
    catalog      Lists nodes and services in the catalog
    lock         Runs a command while holding a lock
    maint        Controls node or service maintenance mode
    services     Registers or deregisters services with the local agent
    reload       Re-reads the agent's configuration files
    recover      Makes a stopped server the only voter of its cluster, keeping its data
    version      Prints the version";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.split_first() {
        None => {
            eprintln!("{USAGE}");
            1
        }
        Some((cmd, rest)) => match cmd.trim_start_matches('-') {
            "version" => {
                println!("Muster v{VERSION}");
                0
            }
            "help" | "h" => {
                println!("{USAGE}");
                0
            }
            "agent" => exit_code(agent(rest)),
            _ => exit_code(client(cmd, rest)),
        },
    };
    std::process::exit(code);
}

fn exit_code(r: anyhow::Result<i32>) -> i32 {
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("start runtime: {e}"))
}

fn client(cmd: &str, args: &[String]) -> anyhow::Result<i32> {
    runtime()?.block_on(commands::run(cmd, args))
}

fn agent(args: &[String]) -> anyhow::Result<i32> {
    let parsed = flags::parse(args, config::AGENT_FLAGS).map_err(|e| anyhow!(e))?;
    if let Some(extra) = parsed.positional.first() {
        return Err(anyhow!("unexpected argument {extra:?}"));
    }
    let (mut cfg, warnings) = config::load(&parsed).map_err(|e| anyhow!(e))?;
    cfg.args = args.to_vec();
    let level: tracing::level_filters::LevelFilter =
        match cfg.log_level.to_ascii_lowercase().as_str() {
            "err" => "error",
            l => l,
        }
        .parse()
        .map_err(|_| {
            anyhow!(
                "invalid -log-level {:?}: expected trace, debug, info, warn or err",
                cfg.log_level
            )
        })?;
    // The libraries' own info lines are noise to an operator; their warnings are not.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target("openraft", level.min(tracing::Level::WARN.into()))
        .with_target("hickory_server", level.min(tracing::Level::WARN.into()))
        .with_target("hickory_proto", level.min(tracing::Level::WARN.into()))
        .with_target("foca", level.min(tracing::Level::INFO.into()));
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr),
        )
        .with(filter)
        .init();
    for w in warnings {
        tracing::warn!("{w}");
    }
    raise_fd_limit();
    let rt = runtime()?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("caught signal; leaving gracefully");
            s.cancel();
        });
        muster_agent::run(cfg, shutdown).await
    })?;
    Ok(0)
}

/// Raises the soft limit on open files to the hard limit, as Consul does through Go's runtime:
/// each HTTP connection and blocking query holds a descriptor, and the usual soft limit of
/// 1024 is spent by a few idle clients.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open file limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open file limit"),
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
