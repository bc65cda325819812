//! Real Consul client libraries against a real agent: py-consul (PyPI) and the npm `consul`
//! package run their scripts in `tests/clients/` against a fresh server on ephemeral ports,
//! each the way its own documentation shows (KV, services with checks, sessions and locks,
//! blocking queries, health by tag). A library that is not installed fails the test with the
//! command that installs it; `.ci/run` installs both.
//!
//! Each script lists the steps that still need a fix in Muster in its `PENDING` table and
//! prints them; `MUSTER_CLIENTS_RUN_PENDING=1` (passed through) runs those too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use muster_tests::*;

/// How long one script may run: its blocking queries wait 10 s at most each.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// py-consul's own suite runs alone (write), the scripts beside each other (read): the suite's
/// tests give the agent fixed sleeps (200 ms for a catalog sync), which a 2-core machine
/// busy with three other clients and their agents can overrun.
static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Fails with `install` unless `program --version` runs.
fn require_program(program: &str, install: &str) -> anyhow::Result<()> {
    match Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        _ => bail!(
            "`{program}` is needed for the client-library tests and is not on PATH: {install}"
        ),
    }
}

/// Fails with `install` unless `path` exists.
fn require_file(path: &Path, what: &str, install: &str) -> anyhow::Result<()> {
    if path.exists() {
        Ok(())
    } else {
        bail!(
            "{what} is not installed ({} is missing): {install}",
            path.display()
        )
    }
}

/// Runs `program args` in `dir` against `agent` (`CONSUL_HTTP_ADDR`), with output to files
/// (no pipe to fill), killing it by PID past [`SCRIPT_TIMEOUT`]. Returns its output when it
/// exits 0 and printed its summary with no failing step.
fn run_script(
    agent: &Agent,
    dir: &Path,
    scratch: &Path,
    program: &str,
    args: &[&str],
    envs: &[(&str, String)],
) -> anyhow::Result<String> {
    let out_path = scratch.join(format!("{program}.out"));
    let out = std::fs::File::create(&out_path).context("create script output file")?;
    let err = out.try_clone().context("clone script output file")?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .env("CONSUL_HTTP_ADDR", agent.http.to_string())
        // The scripts talk to loopback only, never through a proxy from the environment.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_HTTP_SSL")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().with_context(|| format!("spawn {program}"))?;
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let failure = match status {
        None => Some(format!("did not finish within {SCRIPT_TIMEOUT:?}")),
        Some(s) if !s.success() => Some(format!("exited with {s}")),
        Some(_) if !output.contains(" 0 failing") => Some("printed no clean summary".into()),
        Some(_) => None,
    };
    if let Some(why) = failure {
        let logs = agent.logs();
        let tail: Vec<&str> = logs.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{program} {args:?} {why}; its output:\n{output}\nlast agent log lines:\n{}",
            tail.join("\n")
        );
    }
    Ok(output)
}

/// A fresh server that runs script checks, as the scripts register some.
async fn agent(root: &Path, name: &str) -> anyhow::Result<Agent> {
    single_server(root, name, &["-enable-script-checks"]).await
}

/// Runs py-consul script `script` from `tests/clients/py` against `a`.
async fn run_py(a: Agent, root: &Path, script: &'static str) -> anyhow::Result<()> {
    let _shared = MACHINE.read().await;
    let dir = clients_dir().join("py");
    let install = "run `python3 -m pip install --target tests/clients/py/site \
                   -r tests/clients/py/requirements.txt` (.ci/run does)";
    require_program("python3", "install Python 3 (Debian's python3)")?;
    require_file(&dir.join("site/consul/__init__.py"), "py-consul", install)?;
    let scratch = root.to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        run_script(
            &a,
            &dir,
            &scratch,
            "python3",
            &[script],
            &[
                ("PYTHONPATH", dir.join("site").display().to_string()),
                ("PYTHONDONTWRITEBYTECODE", "1".into()),
                ("PYTHONNOUSERSITE", "1".into()),
            ],
        )
    })
    .await??;
    println!("{output}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn py_consul_from_pypi() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let a = agent(root.path(), "py").await?;
    run_py(a, root.path(), "test_client.py").await
}

/// py-consul's ACL API (bootstrap, policy, token and role CRUD, a limited token) against a
/// server with ACLs on and default deny: the shapes Consul's clients send and expect.
#[tokio::test(flavor = "multi_thread")]
async fn py_consul_acl_calls() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let conf = root.path().join("conf");
    std::fs::create_dir_all(&conf)?;
    std::fs::write(
        conf.join("acl.hcl"),
        "acl {\n  enabled = true\n  default_policy = \"deny\"\n}\n",
    )?;
    let conf = conf.display().to_string();
    let a = single_server(root.path(), "pyacl", &["-config-dir", &conf]).await?;
    run_py(a, root.path(), "test_acl.py").await
}

#[tokio::test(flavor = "multi_thread")]
async fn consul_from_npm() -> anyhow::Result<()> {
    let _shared = MACHINE.read().await;
    let dir = clients_dir().join("js");
    let install = "run `npm ci --prefix tests/clients/js` (.ci/run does)";
    require_program("node", "install Node.js (Debian's nodejs and npm)")?;
    require_file(
        &dir.join("node_modules/consul/package.json"),
        "the npm consul package",
        install,
    )?;
    let root = tempfile::tempdir()?;
    let a = agent(root.path(), "js").await?;
    let scratch = root.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        run_script(&a, &dir, &scratch, "node", &["test_client.js"], &[])
    })
    .await??;
    println!("{output}");
    Ok(())
}

/// py-consul's own test suite (the tests in its PyPI sdist, 168 of them), each test against a
/// fresh `muster agent -dev` that `tests/clients/py-suite/conftest.py` starts where py-consul's
/// conftest starts a Consul container. Every test must pass except those listed, with the
/// reason, in `tests/clients/py-suite/not-run.txt`.
#[tokio::test(flavor = "multi_thread")]
async fn py_consul_own_test_suite() -> anyhow::Result<()> {
    let _alone = MACHINE.write().await;
    let suite = clients_dir().join("py-suite");
    let upstream = suite.join("upstream");
    let install = "run .ci/run, which installs tests/clients/py-suite/requirements.txt into \
                   tests/clients/py-suite/site and unpacks py-consul's sdist into \
                   tests/clients/py-suite/upstream";
    require_program("python3", "install Python 3 (Debian's python3)")?;
    require_file(&suite.join("site/pytest/__init__.py"), "pytest", install)?;
    require_file(
        &upstream.join("tests/api/test_kv.py"),
        "py-consul's test suite",
        install,
    )?;
    require_file(
        &clients_dir().join("py/site/consul/__init__.py"),
        "py-consul",
        install,
    )?;
    // Ours in place of py-consul's conftest (which starts Docker containers).
    std::fs::copy(suite.join("conftest.py"), upstream.join("conftest.py"))?;
    let root = tempfile::tempdir()?;
    let out_path = root.path().join("pytest.out");
    let args: Vec<String> = [
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        // py-consul's own options ask for coverage plugins it does not need here.
        "-o",
        "addopts=",
        "-o",
        "asyncio_mode=auto",
        "tests",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let pythonpath = format!(
        "{}:{}",
        suite.join("site").display(),
        clients_dir().join("py/site").display()
    );
    let out = std::fs::File::create(&out_path)?;
    let mut child = Command::new("python3")
        .args(&args)
        .current_dir(&upstream)
        .env("MUSTER_BIN", muster_bin())
        .env("MUSTER_SUITE_LOGS", root.path().join("logs"))
        // The conftest leaves out exactly the tests listed there.
        .env("MUSTER_SUITE_NOT_RUN", suite.join("not-run.txt"))
        .env("PYTHONPATH", pythonpath)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("MUSTER_HTTP_PORT")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("spawn python3 -m pytest")?;
    // The suite runs for a minute or two; each test's blocking queries are short.
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        loop {
            if let Some(s) = child.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await??;
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let summary = output.lines().last().unwrap_or_default().to_string();
    println!("py-consul's own suite: {summary}");
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => bail!("py-consul's own suite exited with {s}:\n{output}"),
        None => bail!("py-consul's own suite did not finish within 600 s:\n{output}"),
    }
}
