//! `muster template`: consul-template's command line. Renders templates from any agent's
//! HTTP API (Consul's included) with blocking queries, and reports each template's state as
//! a TTL check `template:<dest>` on that agent (refreshed every minute, so it goes critical
//! when the renderer is gone). The work is `crate::template`'s; this file is flags, config
//! and the HTTP side.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::client::Client;
use super::error::{Error, Result};
use super::help::{Flag, CLIENT_FLAGS};
use crate::flags::{self, Kind, Parsed};
use crate::template::config::Wait;
use crate::template::exec::{parse_signal, supervise, ExecConfig};
use crate::template::report::{CheckReporter, Http};
use crate::template::runner::{Mode, Reporter, Runner};
use crate::template::{RunnerConfig, TemplateConfig};
use crate::watch::{Fetch, Fetched};
use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

pub(crate) const TEMPLATE_USAGE: &str = "
Usage: muster template [options]

  Renders templates written in consul-template's language (Go's text/template with
  consul-template's functions) from the catalog and KV, writes each destination
  atomically when its content changes, and runs its command after a real change.

  Unlike consul-template, nothing is rendered before every query has answered once,
  a failed or denied read keeps the last file, min_instances and `minimum N` hold the
  last file when a service has too few instances, and check_command validates the
  candidate file before it replaces the old one. Each template's state is the check
  template:<destination> on the agent.

      $ muster template -template \"hosts.ctmpl:/etc/hosts:systemctl reload dnsmasq\"
";

pub(crate) const TEMPLATE_FLAGS: &[Flag] = &[
    Flag::multi(
        "config",
        "FILE|DIR",
        "A consul-template config file (HCL or JSON) or a directory of them. May be given \
         more than once.",
    ),
    Flag::bool(
        "dry",
        "Print rendered templates to stdout instead of writing them; run no commands.",
    ),
    Flag::value(
        "exec",
        "COMMAND",
        "A child process to supervise: started once every template has rendered, sent \
         the reload signal when a file changes; its exit status is this command's.",
    ),
    Flag::value(
        "exec-kill-signal",
        "signal",
        "The signal a stopping renderer sends the child. The default is SIGTERM.",
    ),
    Flag::value(
        "exec-kill-timeout",
        "duration",
        "How long the child may take to stop before it is killed. The default is 30s.",
    ),
    Flag::value(
        "exec-reload-signal",
        "signal",
        "The signal sent to the child when a file changes. The default is SIGHUP.",
    ),
    Flag::value(
        "log-level",
        "level",
        "Log level: trace, debug, info, warn or err. The default is info.",
    ),
    Flag::value(
        "max-stale",
        "duration",
        "Let any server answer reads, up to this far behind the leader.",
    ),
    Flag::bool("once", "Render each template once, then exit."),
    Flag::multi(
        "template",
        "SRC:DEST[:COMMAND]",
        "A template to render to a destination, and an optional command to run when the \
         destination changed. May be given more than once.",
    ),
    Flag::value(
        "wait",
        "MIN[:MAX]",
        "Quiescence: render MIN after the last change, at most MAX after the first. MAX \
         defaults to 4 × MIN.",
    ),
];

/// Reads through the command's client: its address, token and TLS settings.
struct HttpFetch(Client);

impl Fetch for HttpFetch {
    fn get<'a>(&'a self, path: &'a str, _token: Option<&'a str>) -> BoxFuture<'a, Fetched> {
        Box::pin(async move { self.0.send_indexed(path).await.map_err(|e| e.report()) })
    }
}

impl Http for HttpFetch {
    fn put<'a>(
        &'a self,
        path: &'a str,
        body: Vec<u8>,
    ) -> BoxFuture<'a, std::result::Result<u16, String>> {
        Box::pin(async move {
            self.0
                .send(reqwest::Method::PUT, path, Some(body))
                .await
                .map(|(code, _)| code)
                .map_err(|e| e.report())
        })
    }
}

/// The client, with `consul { address, token }` from the config where no flag gives them.
fn client(p: &Parsed, cfg: &RunnerConfig) -> Result<Client> {
    let mut args: Vec<String> = Vec::new();
    for f in CLIENT_FLAGS {
        for v in p.all(f.name) {
            args.push(format!("-{}={v}", f.name));
        }
    }
    if !p.has("http-addr") {
        if let Some(a) = &cfg.address {
            args.push(format!("-http-addr={a}"));
        }
    }
    if !p.has("token") {
        if let Some(t) = &cfg.token {
            args.push(format!("-token={t}"));
        }
    }
    let spec: Vec<(&str, Kind)> = CLIENT_FLAGS.iter().map(|f| (f.name, f.kind)).collect();
    Client::new(&flags::parse(&args, &spec)?)
}

/// The config the flags and files describe; flags win.
fn config(p: &Parsed) -> Result<RunnerConfig> {
    let mut cfg = RunnerConfig::default();
    for path in p.all("config") {
        cfg.load(std::path::Path::new(path)).map_err(Error::Usage)?;
    }
    for t in p.all("template") {
        cfg.templates
            .push(TemplateConfig::from_flag(t).map_err(Error::Usage)?);
    }
    if let Some(w) = p.value("wait") {
        cfg.wait = Some(Wait::parse(w).map_err(|e| Error::Usage(format!("-wait: {e}")))?);
    }
    if let Some(s) = p.value("max-stale") {
        cfg.max_stale = Some(muster_server::go_duration(s).ok_or(Error::InvalidFlag {
            flag: "max-stale",
            value: s.to_string(),
        })?);
    }
    if let Some(l) = p.value("log-level") {
        cfg.log_level = Some(l.to_string());
    }
    if cfg.templates.is_empty() {
        return Err(Error::UsageHelp(
            "At least one template is required (-template or a template block in -config)".into(),
        ));
    }
    Ok(cfg)
}

fn init_logging(level: Option<&str>) -> Result<()> {
    let level: tracing::level_filters::LevelFilter = match level.unwrap_or("info") {
        "err" => "error",
        l => l,
    }
    .parse()
    .map_err(|_| Error::Usage(format!("invalid log level {level:?}")))?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(level)
        .try_init();
    Ok(())
}

pub(crate) async fn template(p: &Parsed) -> Result<i32> {
    let cfg = config(p)?;
    init_logging(cfg.log_level.as_deref())?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let mode = Mode {
        once: p.bool("once"),
        dry: p.bool("dry"),
    };
    let fetch = Arc::new(HttpFetch(client(p, &cfg)?));
    let reporter: Option<Arc<dyn Reporter>> = (!mode.once && !mode.dry)
        .then(|| Arc::new(CheckReporter::new(fetch.clone())) as Arc<dyn Reporter>);
    let exec = exec_config(p)?;
    let runner =
        Runner::new(&cfg, mode, fetch.clone(), reporter.clone()).map_err(Error::Refused)?;
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    tokio::spawn(async move {
        crate::signal::shutdown().await;
        s.cancel();
    });
    let Some(exec) = exec else {
        if mode.once {
            return Ok(runner.run(shutdown).await);
        }
        return Ok(run_reloading(p, mode, runner, fetch, reporter, shutdown).await);
    };
    if mode.once || mode.dry {
        return Err(Error::Usage(
            "-exec cannot be used with -once or -dry".into(),
        ));
    }
    // Under -exec, SIGHUP is the child's business; it must not end the renderer.
    tokio::spawn(async {
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            while hup.recv().await.is_some() {
                tracing::warn!("SIGHUP: reloading is not supported with -exec; ignored");
            }
        }
    });
    // The renderer runs until the supervisor is done with the child.
    let stop = CancellationToken::new();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let supervisor = tokio::spawn(supervise(exec, rx, shutdown, stop.clone()));
    runner.with_events(tx).run(stop).await;
    Ok(supervisor.await.unwrap_or(1))
}

/// Runs `runner` until `shutdown`. Each SIGHUP re-reads the config files and templates, as
/// consul-template does; when every template parses, the new set replaces the running one,
/// else the running set stays and the error says which template is broken, and where.
async fn run_reloading(
    p: &Parsed,
    mode: Mode,
    mut runner: Runner,
    fetch: Arc<HttpFetch>,
    reporter: Option<Arc<dyn Reporter>>,
    shutdown: CancellationToken,
) -> i32 {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return runner.run(shutdown).await;
    };
    loop {
        let stop = shutdown.child_token();
        let mut task = tokio::spawn(runner.run(stop.clone()));
        runner = loop {
            tokio::select! {
                code = &mut task => return code.unwrap_or(1),
                _ = hup.recv() => {
                    let next = config(p).and_then(|c| {
                        for w in &c.warnings {
                            tracing::warn!("{w}");
                        }
                        Runner::new(&c, mode, fetch.clone(), reporter.clone()).map_err(Error::Refused)
                    });
                    match next {
                        Ok(next) => {
                            stop.cancel();
                            let _ = (&mut task).await;
                            tracing::info!("SIGHUP: reloaded the configuration and templates");
                            break next;
                        }
                        Err(e) => tracing::error!(
                            "SIGHUP: reload failed, the running templates stay: {}",
                            e.report()
                        ),
                    }
                }
            }
        };
    }
}

/// `-exec` and its signals.
fn exec_config(p: &Parsed) -> Result<Option<ExecConfig>> {
    let Some(command) = p.value("exec").filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let signal = |flag: &'static str, default: Signal| -> Result<Signal> {
        match p.value(flag) {
            None => Ok(default),
            Some(v) => parse_signal(v).map_err(|e| Error::Usage(format!("-{flag}: {e}"))),
        }
    };
    let kill_timeout = match p.value("exec-kill-timeout") {
        None => std::time::Duration::from_secs(30),
        Some(v) => muster_server::go_duration(v).ok_or(Error::InvalidFlag {
            flag: "exec-kill-timeout",
            value: v.to_string(),
        })?,
    };
    Ok(Some(ExecConfig {
        command: command.to_string(),
        reload_signal: signal("exec-reload-signal", Signal::SIGHUP)?,
        kill_signal: signal("exec-kill-signal", Signal::SIGTERM)?,
        kill_timeout,
    }))
}
