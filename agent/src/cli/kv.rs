//! `muster kv get|put|delete|export|import`: the KV store through the agent's `/v1/kv`.

use std::io::Write;

use base64::Engine;
use serde_json::Value;

use super::client::{parse, qs, Client};
use super::error::{Error, Result};
use crate::flags::{Kind, Parsed};

/// `muster kv SUBCOMMAND ...`.
pub(crate) async fn run(args: &[String]) -> Result<i32> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(Error::usage("usage: muster kv <get|put|delete> ..."));
    };
    match sub.as_str() {
        "get" => kv_get(rest).await,
        "put" => kv_put(rest).await,
        "delete" => kv_delete(rest).await,
        "export" => kv_export(rest).await,
        "import" => kv_import(rest).await,
        other => Err(Error::usage(format!("unknown kv subcommand {other:?}"))),
    }
}

/// The single KEY argument, without a leading `/`; empty when none is given and allowed.
fn one_key(p: &Parsed, allow_empty: bool) -> Result<String> {
    match p.positional.as_slice() {
        [k] => Ok(k.trim_start_matches('/').to_string()),
        [] if allow_empty => Ok(String::new()),
        [] => Err(Error::usage("missing KEY argument")),
        _ => Err(Error::usage(format!(
            "too many arguments (expected 1, got {})",
            p.positional.len()
        ))),
    }
}

/// A value given on the command line: `-` reads stdin (`stdin_step` names that step in an
/// error), `@FILE` reads the file, anything else is the value itself.
fn read_value(arg: &str, stdin_step: &str) -> Result<Vec<u8>> {
    if arg == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map_err(|e| Error::Read {
            what: stdin_step.to_string(),
            source: e,
        })?;
        Ok(b)
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read(path).map_err(|e| Error::Read {
            what: format!("read {path}"),
            source: e,
        })
    } else {
        Ok(arg.as_bytes().to_vec())
    }
}

/// With `-cas`, adds the `-modify-index` the write is conditional on.
fn push_cas(p: &Parsed, extra: &mut Vec<(&str, String)>) -> Result<()> {
    if p.bool("cas") {
        let idx = p
            .num::<u64>("modify-index")?
            .ok_or_else(|| Error::usage("-cas requires -modify-index"))?;
        extra.push(("cas", idx.to_string()));
    }
    Ok(())
}

/// Decodes the agent's KV reply.
fn decode_reply<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Json {
        what: "decode kv reply",
        source: e,
    })
}

/// `kv get KEY`: one value, or with `-recurse`/`-keys` everything under a prefix.
async fn kv_get(args: &[String]) -> Result<i32> {
    let p = parse(
        args,
        &[
            ("recurse", Kind::Bool),
            ("keys", Kind::Bool),
            ("separator", Kind::Value),
            ("detailed", Kind::Bool),
            ("base64", Kind::Bool),
        ],
    )?;
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
        return Err(Error::status(code, &body));
    }
    let v: Value = decode_reply(&body)?;
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

/// `kv put KEY [VALUE|-|@FILE]`: writes a value, optionally as CAS or a lock operation.
async fn kv_put(args: &[String]) -> Result<i32> {
    let p = parse(
        args,
        &[
            ("cas", Kind::Bool),
            ("modify-index", Kind::Value),
            ("flags", Kind::Value),
            ("base64", Kind::Bool),
            ("acquire", Kind::Bool),
            ("release", Kind::Bool),
            ("session", Kind::Value),
        ],
    )?;
    let (key, value) = match p.positional.as_slice() {
        [k] => (k.clone(), Vec::new()),
        [k, v] => (k.clone(), read_value(v, "read value from stdin")?),
        [] => return Err(Error::usage("missing KEY argument")),
        _ => {
            return Err(Error::usage(format!(
                "too many arguments (expected 1 or 2, got {})",
                p.positional.len()
            )))
        }
    };
    let value = if p.bool("base64") {
        base64::engine::general_purpose::STANDARD
            .decode(&value)
            .map_err(Error::Base64)?
    } else {
        value
    };
    let mut extra = Vec::new();
    if let Some(f) = p.num::<u64>("flags")? {
        extra.push(("flags", f.to_string()));
    }
    push_cas(&p, &mut extra)?;
    for op in ["acquire", "release"] {
        if p.bool(op) {
            let s = p
                .value("session")
                .ok_or_else(|| Error::usage(format!("-{op} requires -session")))?;
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

/// `kv delete KEY`: deletes a key, or with `-recurse` a prefix.
async fn kv_delete(args: &[String]) -> Result<i32> {
    let p = parse(
        args,
        &[
            ("recurse", Kind::Bool),
            ("cas", Kind::Bool),
            ("modify-index", Kind::Value),
        ],
    )?;
    let key = one_key(&p, p.bool("recurse"))?;
    let mut extra = Vec::new();
    if p.bool("recurse") {
        extra.push(("recurse", String::new()));
    }
    push_cas(&p, &mut extra)?;
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

/// `kv export [PREFIX]`: everything under a prefix in Consul's export format.
async fn kv_export(args: &[String]) -> Result<i32> {
    let p = parse(args, &[])?;
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
        200 => decode_reply(&body)?,
        404 => Vec::new(),
        _ => return Err(Error::status(code, &body)),
    };
    // Consul's export format: key, flags, base64 value.
    let out: Vec<Value> = entries
        .iter()
        .map(|e| serde_json::json!({"key": e["Key"], "flags": e["Flags"], "value": e["Value"].as_str().unwrap_or("")}))
        .collect();
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(&out, &mut ser).map_err(|e| Error::Json {
        what: "encode export",
        source: e,
    })?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&buf)?;
    writeln!(stdout)?;
    Ok(0)
}

/// `kv import DATA`: writes entries in Consul's export format.
async fn kv_import(args: &[String]) -> Result<i32> {
    let p = parse(args, &[("prefix", Kind::Value)])?;
    let data = match p.positional.as_slice() {
        [] => {
            return Err(Error::usage(
                "missing data: pass @FILE, - (stdin) or the JSON itself",
            ))
        }
        [d] => read_value(d, "read stdin")?,
        _ => {
            return Err(Error::usage(format!(
                "too many arguments (expected 1, got {})",
                p.positional.len()
            )))
        }
    };
    let entries: Vec<Value> = serde_json::from_slice(&data).map_err(Error::ImportData)?;
    // Check everything before writing anything: a bad entry must not leave half an import.
    let mut parsed = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let key = e["key"].as_str().ok_or(Error::ImportKey { entry: i })?;
        let flags = e["flags"].as_u64().unwrap_or(0);
        let value = base64::engine::general_purpose::STANDARD
            .decode(e["value"].as_str().unwrap_or(""))
            .map_err(|err| Error::ImportValue {
                entry: i,
                key: key.to_string(),
                reason: err,
            })?;
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
