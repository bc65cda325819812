//! The client commands of the `muster` binary: they talk to the local agent over HTTP, as
//! Consul's do, so `CONSUL_HTTP_ADDR` and `-http-addr` work the same.

use std::io::Write;

use anyhow::{anyhow, bail, Context};
use base64::Engine;
use serde_json::Value;

use crate::flags::{self, Kind, Parsed};

pub(crate) use muster_api::go_duration;

/// Flags every client command accepts.
const COMMON: &[(&str, Kind)] = &[
    ("http-addr", Kind::Value),
    ("stale", Kind::Bool),
    ("token", Kind::Value),
    ("datacenter", Kind::Value),
];

pub(crate) fn spec(extra: &[(&'static str, Kind)]) -> Vec<(&'static str, Kind)> {
    COMMON.iter().chain(extra).copied().collect()
}

/// An HTTP client for the local agent.
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(p: &Parsed) -> Client {
        let addr = p
            .value("http-addr")
            .map(str::to_string)
            .or_else(|| std::env::var("MUSTER_HTTP_ADDR").ok())
            .or_else(|| std::env::var("CONSUL_HTTP_ADDR").ok())
            .unwrap_or_else(|| "127.0.0.1:8500".into());
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        Client {
            base,
            http: reqwest::Client::new(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.map_err(|e| {
            anyhow!(
                "cannot reach the agent at {}: {}",
                self.base,
                root_cause(&e)
            )
        })?;
        let code = resp.status().as_u16();
        let bytes = resp.bytes().await.context("read agent response")?.to_vec();
        Ok((code, bytes))
    }

    /// A GET returning the status, `X-Consul-Index` and body; blocking reads may take minutes.
    pub(crate) async fn send_indexed(&self, path: &str) -> anyhow::Result<(u16, u64, Vec<u8>)> {
        let url = format!("{}{}", self.base, path);
        let resp = self.http.get(&url).send().await.map_err(|e| {
            anyhow!(
                "cannot reach the agent at {}: {}",
                self.base,
                root_cause(&e)
            )
        })?;
        let code = resp.status().as_u16();
        let index = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((
            code,
            index,
            resp.bytes().await.context("read agent response")?.to_vec(),
        ))
    }

    /// Sends a request and fails with the agent's message unless it answered 2xx.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Vec<u8>> {
        let (code, bytes) = self.send(method, path, body).await?;
        if !(200..300).contains(&code) {
            bail!(
                "Unexpected response code: {code} ({})",
                String::from_utf8_lossy(&bytes).trim()
            );
        }
        Ok(bytes)
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

pub(crate) fn qs(p: &Parsed, extra: &[(&str, String)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if p.bool("stale") {
        parts.push("stale".into());
    }
    if let Some(dc) = p.value("datacenter") {
        parts.push(format!("dc={dc}"));
    }
    for (k, v) in extra {
        if v.is_empty() {
            parts.push(k.to_string());
        } else {
            parts.push(format!("{k}={v}"));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Runs a client command; returns the process exit code.
pub async fn run(cmd: &str, args: &[String]) -> anyhow::Result<i32> {
    match cmd {
        "members" => members(args).await,
        "join" => join(args).await,
        "leave" => leave(args).await,
        "force-leave" => force_leave(args).await,
        "kv" => kv(args).await,
        "catalog" => catalog(args).await,
        "lock" => crate::lock::run(args).await,
        "maint" => maint(args).await,
        "reload" => reload(args).await,
        "services" => services(args).await,
        "recover" => recover(args).await,
        other => bail!("unknown command {other:?}; run `muster help`"),
    }
}

async fn members(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(
        args,
        &spec(&[
            ("status", Kind::Value),
            ("detailed", Kind::Bool),
            ("wan", Kind::Bool),
        ]),
    )
    .map_err(|e| anyhow!(e))?;
    let re = match p.value("status") {
        Some(s) => Some(
            regex_lite::Regex::new(s).map_err(|e| anyhow!("invalid -status regex {s:?}: {e}"))?,
        ),
        None => None,
    };
    let c = Client::new(&p);
    let body = c
        .call(reqwest::Method::GET, "/v1/agent/members", None)
        .await?;
    let list: Vec<Value> = serde_json::from_slice(&body).context("decode members")?;
    let status_name = |n: u64| match n {
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "none",
    };
    let mut rows = Vec::new();
    for m in &list {
        let status = status_name(m["Status"].as_u64().unwrap_or(0));
        if re.as_ref().is_some_and(|r| !r.is_match(status)) {
            continue;
        }
        let tags = m["Tags"].as_object().cloned().unwrap_or_default();
        let tag = |k: &str| {
            tags.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let addr = format!("{}:{}", m["Addr"].as_str().unwrap_or(""), m["Port"]);
        let row = if p.bool("detailed") {
            let t: Vec<String> = tags
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            vec![
                m["Name"].as_str().unwrap_or("").to_string(),
                addr,
                status.into(),
                t.join(","),
            ]
        } else {
            let kind = if tag("role") == "consul" {
                "server"
            } else {
                "client"
            };
            vec![
                m["Name"].as_str().unwrap_or("").to_string(),
                addr,
                status.into(),
                kind.into(),
                tag("build"),
                "2".into(),
                tag("dc"),
            ]
        };
        rows.push(row);
    }
    if rows.is_empty() {
        // Consul exits 2 when the filter matched nobody.
        return Ok(2);
    }
    let header: Vec<String> = if p.bool("detailed") {
        ["Node", "Address", "Status", "Tags"]
            .map(String::from)
            .to_vec()
    } else {
        [
            "Node", "Address", "Status", "Type", "Build", "Protocol", "DC",
        ]
        .map(String::from)
        .to_vec()
    };
    print_table(&header, &rows);
    Ok(0)
}

fn print_table(header: &[String], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |r: &[String]| {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        cells.join("  ").trim_end().to_string()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line(header));
    for r in rows {
        let _ = writeln!(out, "{}", line(r));
    }
}

async fn join(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(args, &spec(&[("wan", Kind::Bool)])).map_err(|e| anyhow!(e))?;
    if p.positional.is_empty() {
        bail!("at least one address to join must be given");
    }
    let c = Client::new(&p);
    let mut joined = 0;
    for a in &p.positional {
        match c
            .call(reqwest::Method::PUT, &format!("/v1/agent/join/{a}"), None)
            .await
        {
            Ok(_) => joined += 1,
            Err(e) => eprintln!("Error joining address '{a}': {e}"),
        }
    }
    if joined == 0 {
        bail!("failed to join any nodes");
    }
    println!("Successfully joined cluster by contacting {joined} nodes.");
    Ok(0)
}

async fn leave(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(args, &spec(&[])).map_err(|e| anyhow!(e))?;
    Client::new(&p)
        .call(reqwest::Method::PUT, "/v1/agent/leave", None)
        .await?;
    println!("Graceful leave complete");
    Ok(0)
}

async fn force_leave(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(args, &spec(&[("prune", Kind::Bool)])).map_err(|e| anyhow!(e))?;
    let [node] = p.positional.as_slice() else {
        bail!("a single node name must be specified");
    };
    Client::new(&p)
        .call(
            reqwest::Method::PUT,
            &format!("/v1/agent/force-leave/{node}"),
            None,
        )
        .await?;
    Ok(0)
}

async fn kv(args: &[String]) -> anyhow::Result<i32> {
    let Some((sub, rest)) = args.split_first() else {
        bail!("usage: muster kv <get|put|delete> ...");
    };
    match sub.as_str() {
        "get" => kv_get(rest).await,
        "put" => kv_put(rest).await,
        "delete" => kv_delete(rest).await,
        "export" => kv_export(rest).await,
        "import" => kv_import(rest).await,
        other => bail!("unknown kv subcommand {other:?}"),
    }
}

fn one_key(p: &Parsed, allow_empty: bool) -> anyhow::Result<String> {
    match p.positional.as_slice() {
        [k] => Ok(k.trim_start_matches('/').to_string()),
        [] if allow_empty => Ok(String::new()),
        [] => bail!("missing KEY argument"),
        _ => bail!(
            "too many arguments (expected 1, got {})",
            p.positional.len()
        ),
    }
}

async fn kv_get(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(
        args,
        &spec(&[
            ("recurse", Kind::Bool),
            ("keys", Kind::Bool),
            ("separator", Kind::Value),
            ("detailed", Kind::Bool),
            ("base64", Kind::Bool),
        ]),
    )
    .map_err(|e| anyhow!(e))?;
    let key = one_key(&p, p.bool("recurse") || p.bool("keys"))?;
    let c = Client::new(&p);
    let mut extra = Vec::new();
    if p.bool("keys") {
        extra.push(("keys", String::new()));
        extra.push(("separator", p.value("separator").unwrap_or("/").to_string()));
    } else if p.bool("recurse") {
        extra.push(("recurse", String::new()));
    }
    let (code, body) = c
        .send(
            reqwest::Method::GET,
            &format!("/v1/kv/{key}{}", qs(&p, &extra)),
            None,
        )
        .await?;
    if code == 404 {
        if p.bool("recurse") || p.bool("keys") {
            return Ok(0);
        }
        eprintln!("Error! No key exists at: {key}");
        return Ok(1);
    }
    if code != 200 {
        bail!(
            "Unexpected response code: {code} ({})",
            String::from_utf8_lossy(&body).trim()
        );
    }
    let v: Value = serde_json::from_slice(&body).context("decode kv reply")?;
    let mut out = std::io::stdout().lock();
    if p.bool("keys") {
        for k in v.as_array().into_iter().flatten() {
            let _ = writeln!(out, "{}", k.as_str().unwrap_or(""));
        }
        return Ok(0);
    }
    let decode = |e: &Value| -> Vec<u8> {
        e["Value"]
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .unwrap_or_default()
    };
    for e in v.as_array().into_iter().flatten() {
        let value = decode(e);
        if p.bool("detailed") {
            // Consul's `kv get -detailed` layout: one field per line, aligned.
            let session = e["Session"].as_str().unwrap_or("-");
            let shown = if p.bool("base64") {
                base64::engine::general_purpose::STANDARD.encode(&value)
            } else {
                String::from_utf8_lossy(&value).into_owned()
            };
            let fields = [
                ("CreateIndex", e["CreateIndex"].to_string()),
                ("Flags", e["Flags"].to_string()),
                ("Key", e["Key"].as_str().unwrap_or("").to_string()),
                ("LockIndex", e["LockIndex"].to_string()),
                ("ModifyIndex", e["ModifyIndex"].to_string()),
                ("Session", session.to_string()),
                ("Value", shown),
            ];
            for (k, v) in fields {
                let _ = writeln!(out, "{k:<16} {v}");
            }
            continue;
        }
        let shown = if p.bool("base64") {
            base64::engine::general_purpose::STANDARD
                .encode(&value)
                .into_bytes()
        } else {
            value
        };
        if p.bool("recurse") {
            let _ = write!(out, "{}:", e["Key"].as_str().unwrap_or(""));
        }
        let _ = out.write_all(&shown);
        let _ = writeln!(out);
    }
    Ok(0)
}

async fn kv_put(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(
        args,
        &spec(&[
            ("cas", Kind::Bool),
            ("modify-index", Kind::Value),
            ("flags", Kind::Value),
            ("base64", Kind::Bool),
            ("acquire", Kind::Bool),
            ("release", Kind::Bool),
            ("session", Kind::Value),
        ]),
    )
    .map_err(|e| anyhow!(e))?;
    let (key, value) = match p.positional.as_slice() {
        [k] => (k.clone(), Vec::new()),
        [k, v] if v == "-" => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                .context("read value from stdin")?;
            (k.clone(), b)
        }
        [k, v] if v.starts_with('@') => (
            k.clone(),
            std::fs::read(&v[1..]).with_context(|| format!("read {}", &v[1..]))?,
        ),
        [k, v] => (k.clone(), v.clone().into_bytes()),
        [] => bail!("missing KEY argument"),
        _ => bail!(
            "too many arguments (expected 1 or 2, got {})",
            p.positional.len()
        ),
    };
    let value = if p.bool("base64") {
        base64::engine::general_purpose::STANDARD
            .decode(&value)
            .map_err(|e| anyhow!("-base64: invalid value: {e}"))?
    } else {
        value
    };
    let mut extra = Vec::new();
    if let Some(f) = p.num::<u64>("flags").map_err(|e| anyhow!(e))? {
        extra.push(("flags", f.to_string()));
    }
    if p.bool("cas") {
        let idx = p
            .num::<u64>("modify-index")
            .map_err(|e| anyhow!(e))?
            .ok_or_else(|| anyhow!("-cas requires -modify-index"))?;
        extra.push(("cas", idx.to_string()));
    }
    for op in ["acquire", "release"] {
        if p.bool(op) {
            let s = p
                .value("session")
                .ok_or_else(|| anyhow!("-{op} requires -session"))?;
            extra.push((op, s.to_string()));
        }
    }
    let key = key.trim_start_matches('/').to_string();
    let body = Client::new(&p)
        .call(
            reqwest::Method::PUT,
            &format!("/v1/kv/{key}{}", qs(&p, &extra)),
            Some(value),
        )
        .await?;
    if body.starts_with(b"true") {
        println!("Success! Data written to: {key}");
        Ok(0)
    } else {
        eprintln!("Error! Did not write to {key}: CAS failed");
        Ok(1)
    }
}

async fn kv_delete(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(
        args,
        &spec(&[
            ("recurse", Kind::Bool),
            ("cas", Kind::Bool),
            ("modify-index", Kind::Value),
        ]),
    )
    .map_err(|e| anyhow!(e))?;
    let key = one_key(&p, p.bool("recurse"))?;
    let mut extra = Vec::new();
    if p.bool("recurse") {
        extra.push(("recurse", String::new()));
    }
    if p.bool("cas") {
        let idx = p
            .num::<u64>("modify-index")
            .map_err(|e| anyhow!(e))?
            .ok_or_else(|| anyhow!("-cas requires -modify-index"))?;
        extra.push(("cas", idx.to_string()));
    }
    let body = Client::new(&p)
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/kv/{key}{}", qs(&p, &extra)),
            None,
        )
        .await?;
    if body.starts_with(b"true") {
        println!("Success! Deleted key: {key}");
        Ok(0)
    } else {
        eprintln!("Error! Did not delete key {key}: CAS failed");
        Ok(1)
    }
}

async fn kv_export(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(args, &spec(&[])).map_err(|e| anyhow!(e))?;
    let prefix = one_key(&p, true)?;
    let c = Client::new(&p);
    let (code, body) = c
        .send(
            reqwest::Method::GET,
            &format!("/v1/kv/{prefix}{}", qs(&p, &[("recurse", String::new())])),
            None,
        )
        .await?;
    let entries: Vec<Value> = match code {
        200 => serde_json::from_slice(&body).context("decode kv reply")?,
        404 => Vec::new(),
        _ => bail!(
            "Unexpected response code: {code} ({})",
            String::from_utf8_lossy(&body).trim()
        ),
    };
    // Consul's export format: key, flags, base64 value.
    let out: Vec<Value> = entries
        .iter()
        .map(|e| serde_json::json!({"key": e["Key"], "flags": e["Flags"], "value": e["Value"].as_str().unwrap_or("")}))
        .collect();
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(&out, &mut ser).context("encode export")?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&buf)?;
    writeln!(stdout)?;
    Ok(0)
}

async fn kv_import(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(args, &spec(&[("prefix", Kind::Value)])).map_err(|e| anyhow!(e))?;
    let data = match p.positional.as_slice() {
        [] => bail!("missing data: pass @FILE, - (stdin) or the JSON itself"),
        [d] if d == "-" => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).context("read stdin")?;
            b
        }
        [d] if d.starts_with('@') => {
            std::fs::read(&d[1..]).with_context(|| format!("read {}", &d[1..]))?
        }
        [d] => d.clone().into_bytes(),
        _ => bail!(
            "too many arguments (expected 1, got {})",
            p.positional.len()
        ),
    };
    let entries: Vec<Value> =
        serde_json::from_slice(&data).map_err(|e| anyhow!("cannot parse import data: {e}"))?;
    // Check everything before writing anything: a bad entry must not leave half an import.
    let mut parsed = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let key = e["key"]
            .as_str()
            .ok_or_else(|| anyhow!("entry {i}: missing \"key\""))?;
        let flags = e["flags"].as_u64().unwrap_or(0);
        let value = base64::engine::general_purpose::STANDARD
            .decode(e["value"].as_str().unwrap_or(""))
            .map_err(|err| anyhow!("entry {i} ({key}): value is not base64: {err}"))?;
        parsed.push((
            format!("{}{key}", p.value("prefix").unwrap_or("")),
            flags,
            value,
        ));
    }
    let c = Client::new(&p);
    for (key, flags, value) in parsed {
        c.call(
            reqwest::Method::PUT,
            &format!("/v1/kv/{key}?flags={flags}"),
            Some(value),
        )
        .await?;
        println!("Imported: {key}");
    }
    Ok(0)
}

async fn catalog(args: &[String]) -> anyhow::Result<i32> {
    let Some((sub, rest)) = args.split_first() else {
        bail!("usage: muster catalog <nodes|services|datacenters> ...");
    };
    match sub.as_str() {
        "datacenters" => {
            let p = flags::parse(rest, &spec(&[])).map_err(|e| anyhow!(e))?;
            let body = Client::new(&p)
                .call(reqwest::Method::GET, "/v1/catalog/datacenters", None)
                .await?;
            for dc in serde_json::from_slice::<Vec<String>>(&body)? {
                println!("{dc}");
            }
            Ok(0)
        }
        "nodes" => {
            let p = flags::parse(
                rest,
                &spec(&[
                    ("service", Kind::Value),
                    ("detailed", Kind::Bool),
                    ("node-meta", Kind::Multi),
                ]),
            )
            .map_err(|e| anyhow!(e))?;
            let c = Client::new(&p);
            let path = match p.value("service") {
                Some(s) => format!("/v1/catalog/service/{s}{}", qs(&p, &[])),
                None => format!("/v1/catalog/nodes{}", qs(&p, &[])),
            };
            let list: Vec<Value> =
                serde_json::from_slice(&c.call(reqwest::Method::GET, &path, None).await?)?;
            let mut seen = std::collections::BTreeSet::new();
            let mut rows = Vec::new();
            for n in &list {
                let name = n["Node"].as_str().unwrap_or("").to_string();
                if !seen.insert(name.clone()) {
                    continue;
                }
                let id = n["ID"].as_str().unwrap_or("");
                let short = if p.bool("detailed") {
                    id.to_string()
                } else {
                    id.chars().take(8).collect()
                };
                let mut row = vec![
                    name,
                    short,
                    n["Address"].as_str().unwrap_or("").into(),
                    n["Datacenter"].as_str().unwrap_or("").into(),
                ];
                if p.bool("detailed") {
                    let meta = n
                        .get("Meta")
                        .or_else(|| n.get("NodeMeta"))
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    row.push(
                        meta.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(", "),
                    );
                }
                rows.push(row);
            }
            let mut header: Vec<String> =
                ["Node", "ID", "Address", "DC"].map(String::from).to_vec();
            if p.bool("detailed") {
                header.push("Meta".into());
            }
            print_table(&header, &rows);
            Ok(0)
        }
        "services" => {
            let p = flags::parse(rest, &spec(&[("tags", Kind::Bool), ("node", Kind::Value)]))
                .map_err(|e| anyhow!(e))?;
            let c = Client::new(&p);
            let services: std::collections::BTreeMap<String, Vec<String>> = match p.value("node") {
                Some(n) => {
                    let v: Value = serde_json::from_slice(
                        &c.call(
                            reqwest::Method::GET,
                            &format!("/v1/catalog/node/{n}{}", qs(&p, &[])),
                            None,
                        )
                        .await?,
                    )?;
                    let mut m = std::collections::BTreeMap::new();
                    for s in v["Services"]
                        .as_object()
                        .into_iter()
                        .flat_map(|o| o.values())
                    {
                        let tags = s["Tags"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|t| t.as_str().map(String::from))
                            .collect();
                        m.insert(s["Service"].as_str().unwrap_or("").to_string(), tags);
                    }
                    m
                }
                None => serde_json::from_slice(
                    &c.call(
                        reqwest::Method::GET,
                        &format!("/v1/catalog/services{}", qs(&p, &[])),
                        None,
                    )
                    .await?,
                )?,
            };
            if p.bool("tags") {
                let rows: Vec<Vec<String>> = services
                    .iter()
                    .map(|(n, t)| vec![n.clone(), t.join(",")])
                    .collect();
                let mut out = std::io::stdout().lock();
                let w = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
                for r in rows {
                    let _ = writeln!(out, "{:<w$}  {}", r[0], r[1]);
                }
            } else {
                for n in services.keys() {
                    println!("{n}");
                }
            }
            Ok(0)
        }
        other => bail!("unknown catalog subcommand {other:?}"),
    }
}

async fn maint(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(
        args,
        &spec(&[
            ("enable", Kind::Bool),
            ("disable", Kind::Bool),
            ("reason", Kind::Value),
            ("service", Kind::Value),
            ("ttl", Kind::Value),
        ]),
    )
    .map_err(|e| anyhow!(e))?;
    let c = Client::new(&p);
    if p.bool("enable") && p.bool("disable") {
        bail!("only one of -enable or -disable may be given");
    }
    if !p.bool("enable") && !p.bool("disable") {
        if p.has("reason") || p.has("service") || p.has("ttl") {
            bail!("-reason, -service and -ttl need -enable or -disable");
        }
        // List current maintenances; print nothing when there are none (scripts rely on it).
        let checks: std::collections::BTreeMap<String, Value> = serde_json::from_slice(
            &c.call(reqwest::Method::GET, "/v1/agent/checks", None)
                .await?,
        )?;
        let mut out = std::io::stdout().lock();
        for (id, chk) in &checks {
            let reason = chk["Notes"].as_str().unwrap_or("");
            if id == "_node_maintenance" {
                writeln!(
                    out,
                    "Node:\n  Name:   {}\n  Reason: {reason}\n",
                    chk["Node"].as_str().unwrap_or("")
                )?;
            } else if let Some(sid) = id.strip_prefix("_service_maintenance:") {
                writeln!(out, "Service:\n  ID:     {sid}\n  Reason: {reason}\n")?;
            }
        }
        return Ok(0);
    }
    let enable = p.bool("enable");
    let mut q = vec![format!("enable={enable}")];
    if let Some(r) = p.value("reason") {
        q.push(format!("reason={}", url_escape(r)));
    }
    if let Some(t) = p.value("ttl") {
        go_duration(t).ok_or_else(|| anyhow!("invalid value {t:?} for flag -ttl"))?;
        q.push(format!("ttl={t}"));
    }
    let q = q.join("&");
    match p.value("service") {
        Some(sid) => {
            c.call(
                reqwest::Method::PUT,
                &format!("/v1/agent/service/maintenance/{sid}?{q}"),
                None,
            )
            .await?;
            if enable {
                println!("Service entered maintenance mode: {sid}");
            } else {
                println!("Service maintenance is now disabled: {sid}");
            }
        }
        None => {
            c.call(
                reqwest::Method::PUT,
                &format!("/v1/agent/maintenance?{q}"),
                None,
            )
            .await?;
            if enable {
                println!("Node entered maintenance mode");
            } else {
                println!("Node maintenance is now disabled");
            }
        }
    }
    Ok(0)
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn reload(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(args, &spec(&[])).map_err(|e| anyhow!(e))?;
    Client::new(&p)
        .call(reqwest::Method::PUT, "/v1/agent/reload", None)
        .await?;
    println!("Configuration reload triggered");
    Ok(0)
}

/// `muster recover -data-dir DIR`: offline, on a stopped server whose fellow servers are gone
/// for good, makes it the sole voter of its cluster, keeping its data.
async fn recover(args: &[String]) -> anyhow::Result<i32> {
    let p = flags::parse(args, &[("data-dir", Kind::Value)]).map_err(|e| anyhow!(e))?;
    let Some(dir) = p.value("data-dir") else {
        bail!("muster recover needs -data-dir: the data dir of the stopped server to recover");
    };
    let r = muster_server::recover_sole_server(std::path::Path::new(dir)).await?;
    println!(
        "Recovered server {} ({}) as the only voter of its cluster (was: {}), at log index {} \
         in term {}. Start its agent as before: it elects itself with all its data, and servers \
         that join it are added as voters. The replaced servers are retired: if one comes back \
         with its old data dir, it sets that data aside and rejoins as a new member.",
        r.node_name,
        r.address,
        r.old_voters.join(", "),
        r.index,
        r.term
    );
    Ok(0)
}

async fn services(args: &[String]) -> anyhow::Result<i32> {
    let Some((sub, rest)) = args.split_first() else {
        bail!("usage: muster services <register|deregister> ...");
    };
    match sub.as_str() {
        "register" => {
            let p = flags::parse(
                rest,
                &spec(&[
                    ("name", Kind::Value),
                    ("id", Kind::Value),
                    ("address", Kind::Value),
                    ("port", Kind::Value),
                    ("tag", Kind::Multi),
                    ("meta", Kind::Multi),
                ]),
            )
            .map_err(|e| anyhow!(e))?;
            let c = Client::new(&p);
            let defs: Vec<Value> = match (p.positional.as_slice(), p.value("name")) {
                ([file], None) => {
                    let v = crate::config::read_file(std::path::Path::new(file))
                        .map_err(|e| anyhow!(e))?;
                    match (v.get("service"), v.get("services")) {
                        (Some(s), _) => vec![s.clone()],
                        (None, Some(Value::Array(a))) => a.clone(),
                        _ => vec![v],
                    }
                }
                ([], Some(name)) => {
                    let mut meta = serde_json::Map::new();
                    for kv in p.all("meta") {
                        let (k, v) = kv
                            .split_once('=')
                            .ok_or_else(|| anyhow!("-meta expects key=value, got {kv:?}"))?;
                        meta.insert(k.into(), v.into());
                    }
                    let port: u16 = p.num("port").map_err(|e| anyhow!(e))?.unwrap_or(0);
                    vec![
                        serde_json::json!({"Name": name, "ID": p.value("id").unwrap_or(name), "Address": p.value("address").unwrap_or(""),
                        "Port": port, "Tags": p.all("tag"), "Meta": meta}),
                    ]
                }
                _ => bail!("give either a definition FILE or -name (not both)"),
            };
            for d in defs {
                c.call(
                    reqwest::Method::PUT,
                    "/v1/agent/service/register",
                    Some(serde_json::to_vec(&d)?),
                )
                .await?;
                println!(
                    "Registered service: {}",
                    d.get("name")
                        .or(d.get("Name"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                );
            }
            Ok(0)
        }
        "deregister" => {
            let p = flags::parse(rest, &spec(&[("id", Kind::Value)])).map_err(|e| anyhow!(e))?;
            let id = match (p.value("id"), p.positional.as_slice()) {
                (Some(id), []) => id.to_string(),
                (None, [id]) => id.clone(),
                _ => bail!("usage: muster services deregister ID"),
            };
            Client::new(&p)
                .call(
                    reqwest::Method::PUT,
                    &format!("/v1/agent/service/deregister/{id}"),
                    None,
                )
                .await?;
            println!("Deregistered service: {id}");
            Ok(0)
        }
        other => bail!("unknown services subcommand {other:?}"),
    }
}
