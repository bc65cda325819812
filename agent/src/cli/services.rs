//! `muster services register|deregister`: services of the local agent.

use serde_json::Value;

use super::client::{parse, Client};
use super::error::{Error, Result};
use crate::flags::Kind;

/// `muster services SUBCOMMAND ...`.
pub(crate) async fn run(args: &[String]) -> Result<i32> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(Error::usage(
            "usage: muster services <register|deregister> ...",
        ));
    };
    match sub.as_str() {
        "register" => register(rest).await,
        "deregister" => deregister(rest).await,
        other => Err(Error::usage(format!(
            "unknown services subcommand {other:?}"
        ))),
    }
}

/// Registers the services of a definition FILE (Consul's `service`/`services` shapes, or a
/// bare definition), or the one given by `-name` and its flags.
async fn register(rest: &[String]) -> Result<i32> {
    let p = parse(
        rest,
        &[
            ("name", Kind::Value),
            ("id", Kind::Value),
            ("address", Kind::Value),
            ("port", Kind::Value),
            ("tag", Kind::Multi),
            ("meta", Kind::Multi),
        ],
    )?;
    let c = Client::new(&p);
    let defs: Vec<Value> = match (p.positional.as_slice(), p.value("name")) {
        ([file], None) => {
            let v = crate::config::read_file(std::path::Path::new(file)).map_err(Error::Config)?;
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
                    .ok_or_else(|| Error::usage(format!("-meta expects key=value, got {kv:?}")))?;
                meta.insert(k.into(), v.into());
            }
            let port: u16 = p.num("port")?.unwrap_or(0);
            vec![
                serde_json::json!({"Name": name, "ID": p.value("id").unwrap_or(name), "Address": p.value("address").unwrap_or(""),
                        "Port": port, "Tags": p.all("tag"), "Meta": meta}),
            ]
        }
        _ => {
            return Err(Error::usage(
                "give either a definition FILE or -name (not both)",
            ))
        }
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

/// Deregisters the service with the given ID.
async fn deregister(rest: &[String]) -> Result<i32> {
    let p = parse(rest, &[("id", Kind::Value)])?;
    let id = match (p.value("id"), p.positional.as_slice()) {
        (Some(id), []) => id.to_string(),
        (None, [id]) => id.clone(),
        _ => return Err(Error::usage("usage: muster services deregister ID")),
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
