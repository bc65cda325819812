//! `muster info`: the `Stats` sections of `/v1/agent/self` as `consul info` prints them, one
//! `section:` line each (sorted) and a tab-indented `key = value` line per figure (sorted).

use serde_json::Value;

use super::client::Client;
use super::error::{Error, Result};
use crate::flags::Parsed;

pub(crate) const INFO_USAGE: &str = "
Usage: muster info [options]

  Provides debugging information for operators
";

pub(crate) async fn info(p: &Parsed) -> Result<i32> {
    if !p.positional.is_empty() {
        return Err(Error::UsageHelp(format!(
            "Error found unexpected args: [{}]",
            p.positional.join(" ")
        )));
    }
    let c = Client::new(p).map_err(|e| e.context("Error connecting to Consul agent"))?;
    let me: Value = c
        .get_json("/v1/agent/self")
        .await
        .map_err(|e| e.context("Error querying agent"))?;
    print!("{}", render(&me["Stats"]));
    Ok(0)
}

/// The sections and their figures, sorted by name, as `consul info` lays them out.
fn render(stats: &Value) -> String {
    let mut out = String::new();
    let Some(sections) = stats.as_object() else {
        return out;
    };
    let mut names: Vec<&String> = sections.keys().collect();
    names.sort();
    for name in names {
        out.push_str(&format!("{name}:\n"));
        let Some(figures) = sections[name].as_object() else {
            continue;
        };
        let mut keys: Vec<&String> = figures.keys().collect();
        keys.sort();
        for k in keys {
            let v = match &figures[k] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            out.push_str(&format!("\t{k} = {v}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_keys_print_sorted_as_consul_does() {
        let stats = serde_json::json!({
            "raft": {"state": "Leader", "applied_index": "7"},
            "agent": {"checks": "0"},
        });
        assert_eq!(
            render(&stats),
            "agent:\n\tchecks = 0\nraft:\n\tapplied_index = 7\n\tstate = Leader\n"
        );
    }
}
