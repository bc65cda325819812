//! Serf-style event handlers on real agents: member-join, member-failed and member-leave
//! reach the handlers with the members on stdin, a quick restart is member-update, filters
//! keep handlers to their events, a live-node list kept by a handler stays right, and a
//! hanging handler is killed at its timeout without holding up the next event.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use muster_tests::*;

/// Appends `== EVENT SELF ROLE RACK` and then its stdin to `DIR/SELF.KIND`.
const RECORD: &str = r#"dir=$(dirname "$0")
{ echo "== $SERF_EVENT $SERF_SELF_NAME $SERF_SELF_ROLE $SERF_TAG_RACK"; cat; } >> "$dir/$SERF_SELF_NAME.$1"
"#;

/// The Droonga pattern: a file of live nodes, `NAME ADDR` per line, kept from member events.
const LIVE: &str = r#"dir=$(dirname "$0")
list="$dir/$SERF_SELF_NAME.live"
touch "$list"
tab=$(printf '\t')
while IFS="$tab" read -r name addr role tags; do
  grep -vx "$name $addr" "$list" > "$list.tmp"
  case "$SERF_EVENT" in
    member-join) echo "$name $addr" >> "$list.tmp" ;;
  esac
  mv "$list.tmp" "$list"
done
"#;

fn write_scripts(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("record.sh"), RECORD)?;
    std::fs::write(dir.join("live.sh"), LIVE)?;
    Ok(())
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The member lines (`name\taddr\t…`) a record file holds for `name`.
fn lines_for(text: &str, name: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}\t127.0.0.1\t")))
        .count()
}

async fn wait_live(dir: &Path, on: &[&Agent], want: &[&str]) -> anyhow::Result<()> {
    let want: BTreeSet<String> = want.iter().map(|n| format!("{n} 127.0.0.1")).collect();
    for a in on {
        let file = dir.join(format!("{}.live", a.name));
        let what = format!("{}'s live list to be {want:?}", a.name);
        let got = wait_until(&what, Duration::from_secs(30), || async {
            let got: BTreeSet<String> = read(file.clone()).lines().map(str::to_string).collect();
            (got == want).then_some(())
        })
        .await;
        got.map_err(|e| anyhow::anyhow!("{e}; list: {:?}", read(file.clone())))?;
    }
    Ok(())
}

async fn wait_lines(file: PathBuf, name: &str, n: usize) -> anyhow::Result<()> {
    let what = format!("{n} line(s) for {name} in {}", file.display());
    let got = wait_until(&what, Duration::from_secs(30), || async {
        (lines_for(&read(file.clone()), name) >= n).then_some(())
    })
    .await;
    got.map_err(|e| anyhow::anyhow!("{e}; file:\n{}", read(file.clone())))
}

#[tokio::test(flavor = "multi_thread")]
async fn member_events_through_fail_rejoin_and_leave() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let h = root.path().join("handlers");
    write_scripts(&h)?;
    let (record, live) = (h.join("record.sh"), h.join("live.sh"));
    let handler_args = [
        format!("member-failed=sh {} failed", record.display()),
        format!("member-join=sh {} join", record.display()),
        format!("member-update=sh {} update", record.display()),
        format!(
            "member-join,member-leave,member-failed=sh {}",
            live.display()
        ),
    ];
    let mut args: Vec<&str> = vec!["-node-meta", "rack:r1"];
    for a in &handler_args {
        args.extend(["-event-handler", a.as_str()]);
    }
    let s1 = single_server(root.path(), "s1", &args).await?;
    let join = s1.serf.to_string();
    let mut client_args = args.clone();
    client_args.extend(["-join", join.as_str()]);
    let c2 = Agent::start("c2", &root.path().join("c2"), &client_args)?;
    let mut c3 = Agent::start("c3", &root.path().join("c3"), &client_args)?;
    wait_live(&h, &[&s1, &c2, &c3], &["s1", "c2", "c3"]).await?;
    // Each agent hears its own join too, with its own name, role and node meta.
    let joins = read(h.join("s1.join"));
    assert!(joins.contains("== member-join s1 consul r1\n"), "{joins}");
    assert!(joins.contains("s1\t127.0.0.1\tconsul\t"), "{joins}");
    assert!(read(h.join("c2.join")).contains("== member-join c2 node r1\n"));

    // kill -9: the others' member-failed handlers get its name and address.
    c3.kill9();
    for a in ["s1", "c2"] {
        wait_lines(h.join(format!("{a}.failed")), "c3", 1).await?;
        let failed = read(h.join(format!("{a}.failed")));
        assert!(failed.contains("c3\t127.0.0.1\tnode\t"), "{failed}");
        assert!(failed.contains("role=node"), "{failed}");
    }
    wait_live(&h, &[&s1, &c2], &["s1", "c2"]).await?;

    // Back again: member-join with it.
    c3.restart()?;
    for a in ["s1", "c2"] {
        wait_lines(h.join(format!("{a}.join")), "c3", 2).await?;
    }
    wait_live(&h, &[&s1, &c2, &c3], &["s1", "c2", "c3"]).await?;

    // A graceful leave is member-leave, not member-failed.
    let out = c3.cli(&["leave"]);
    assert!(out.status.success(), "{out:?}");
    c3.wait_exit(Duration::from_secs(15))?;
    wait_live(&h, &[&s1, &c2], &["s1", "c2"]).await?;
    c3.restart()?;
    wait_live(&h, &[&s1, &c2, &c3], &["s1", "c2", "c3"]).await?;

    // The member-failed-only handler ran for the one failure and for nothing else.
    for a in ["s1", "c2"] {
        let failed = read(h.join(format!("{a}.failed")));
        assert_eq!(lines_for(&failed, "c3"), 1, "{failed}");
        let role = if a == "s1" { "consul" } else { "node" };
        let headers: Vec<&str> = failed.lines().filter(|l| l.starts_with("==")).collect();
        assert_eq!(
            headers,
            [format!("== member-failed {a} {role} r1")],
            "{failed}"
        );
    }

    // Back at once, before failure detection: the same member at a new address (its gossip
    // port is new) is member-update. Nothing before was one.
    let updates = read(h.join("s1.update"));
    assert!(updates.is_empty(), "{updates}");
    c3.restart()?;
    for a in ["s1", "c2"] {
        wait_lines(h.join(format!("{a}.update")), "c3", 1).await?;
    }
    Ok(())
}

/// Whether a process runs with exactly this command line.
fn process_running(argv: &[&str]) -> bool {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc").is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_handler_is_killed_at_its_timeout() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let h = root.path().join("handlers");
    write_scripts(&h)?;
    let config = root.path().join("handlers.json");
    let record = format!("member-join=sh {} join", h.join("record.sh").display());
    let cfg = serde_json::json!({
        "event_handlers": ["member-join=sleep 1017", record],
        "event_handler_timeout": "1s",
    });
    std::fs::write(&config, cfg.to_string())?;
    let config = config.display().to_string();
    let s1 = single_server(root.path(), "s1", &["-config-file", &config]).await?;
    // The hanging handler is killed at 1 s; the next handler still gets the event.
    wait_lines(h.join("s1.join"), "s1", 1).await?;
    let log = s1.logs();
    assert!(
        log.contains("event handler timed out")
            && log.contains("handler=sleep 1017")
            && log.contains("timeout=1s"),
        "{log}"
    );
    assert!(
        !process_running(&["sleep", "1017"]),
        "the handler was not killed"
    );
    // And the next event is delivered too.
    let _c2 = Agent::start(
        "c2",
        &root.path().join("c2"),
        &["-join", &s1.serf.to_string()],
    )?;
    wait_lines(h.join("s1.join"), "c2", 1).await?;
    Ok(())
}

/// A member failed for longer than `reconnect_timeout` is reaped: `member-reap` reaches the
/// handlers with its line, it leaves the member list, and the leader takes it out of the
/// catalog.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_member_is_reaped_after_reconnect_timeout() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let h = root.path().join("handlers");
    write_scripts(&h)?;
    let record = h.join("record.sh");
    let cfg = root.path().join("reap.json");
    std::fs::write(&cfg, r#"{"reconnect_timeout": "3s"}"#)?;
    let cfg = cfg.display().to_string();
    let handler = format!("member-reap=sh {} reap", record.display());
    let s1 = single_server(
        root.path(),
        "s1",
        &["-config-file", &cfg, "-event-handler", &handler],
    )
    .await?;
    let join = s1.serf.to_string();
    let mut c2 = Agent::start("c2", &root.path().join("c2"), &["-join", &join])?;
    wait_until("c2 in the catalog", Duration::from_secs(20), || async {
        let r = get(&s1.url("/v1/catalog/node/c2")).await.ok()?;
        (r.status == 200 && !r.json().is_null()).then_some(())
    })
    .await?;
    c2.kill9();
    wait_lines(h.join("s1.reap"), "c2", 1).await?;
    assert!(read(h.join("s1.reap")).starts_with("== member-reap s1"));
    let members = get(&s1.url("/v1/agent/members")).await?.json();
    let names: Vec<&str> = members
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["Name"].as_str())
        .collect();
    assert_eq!(names, ["s1"], "the reaped member is no longer listed");
    wait_until("c2 out of the catalog", Duration::from_secs(10), || async {
        let r = get(&s1.url("/v1/catalog/nodes")).await.ok()?;
        let nodes = r.json();
        let listed = nodes
            .as_array()?
            .iter()
            .any(|n| n["Node"].as_str() == Some("c2"));
        (!listed).then_some(())
    })
    .await?;
    Ok(())
}
