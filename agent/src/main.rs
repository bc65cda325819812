//! `muster`: the agent and its client commands in one binary.

use anyhow::{anyhow, Context as _};
use muster_agent::{cli, config, flags};
use tokio_util::sync::CancellationToken;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cli::main(&args, agent));
}

/// `muster agent ARGS`: runs the agent until a signal or `leave` stops it.
fn agent(args: &[String]) -> i32 {
    match run_agent(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e:#}");
            1
        }
    }
}

fn run_agent(args: &[String]) -> anyhow::Result<()> {
    let parsed = flags::parse(args, config::AGENT_FLAGS)?;
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
    let text = (!cfg.log_json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
    });
    // `-log-json`: one JSON object a line (timestamp, level, fields, target).
    let json = cfg.log_json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    let (monitor, logs) = muster_agent::log_broadcast::Broadcast::new();
    cfg.logs = Some(logs);
    tracing_subscriber::registry()
        .with(text)
        .with(json)
        .with(monitor)
        .with(filter)
        .init();
    for w in warnings {
        tracing::warn!("{w}");
    }
    let _pid_file = match &cfg.pid_file {
        Some(p) => Some(
            muster_agent::readiness::PidFile::create(p)
                .with_context(|| format!("write pid file {}", p.display()))?,
        ),
        None => None,
    };
    raise_fd_limit();
    let rt = cli::runtime()?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            muster_agent::signal::shutdown().await;
            tracing::info!("caught signal; leaving gracefully");
            s.cancel();
        });
        muster_agent::run(cfg, shutdown).await
    })?;
    Ok(())
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
