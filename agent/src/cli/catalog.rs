//! `muster catalog datacenters|nodes|services`: what the catalog holds.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde_json::Value;

use super::client::{parse, qs, Client};
use super::error::{Error, Result};
use super::table::print_table;
use crate::flags::Kind;

/// `muster catalog SUBCOMMAND ...`.
pub(crate) async fn run(args: &[String]) -> Result<i32> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(Error::usage(
            "usage: muster catalog <nodes|services|datacenters> ...",
        ));
    };
    match sub.as_str() {
        "datacenters" => datacenters(rest).await,
        "nodes" => nodes(rest).await,
        "services" => services(rest).await,
        other => Err(Error::usage(format!(
            "unknown catalog subcommand {other:?}"
        ))),
    }
}

async fn datacenters(rest: &[String]) -> Result<i32> {
    let p = parse(rest, &[])?;
    let body = Client::new(&p)
        .call(reqwest::Method::GET, "/v1/catalog/datacenters", None)
        .await?;
    for dc in serde_json::from_slice::<Vec<String>>(&body)? {
        println!("{dc}");
    }
    Ok(0)
}

async fn nodes(rest: &[String]) -> Result<i32> {
    let p = parse(
        rest,
        &[
            ("service", Kind::Value),
            ("detailed", Kind::Bool),
            ("node-meta", Kind::Multi),
        ],
    )?;
    let c = Client::new(&p);
    let path = match p.value("service") {
        Some(s) => format!("/v1/catalog/service/{s}{}", qs(&p, &[])),
        None => format!("/v1/catalog/nodes{}", qs(&p, &[])),
    };
    let list: Vec<Value> =
        serde_json::from_slice(&c.call(reqwest::Method::GET, &path, None).await?)?;
    let mut seen = BTreeSet::new();
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
    let mut header: Vec<String> = ["Node", "ID", "Address", "DC"].map(String::from).to_vec();
    if p.bool("detailed") {
        header.push("Meta".into());
    }
    print_table(&header, &rows);
    Ok(0)
}

async fn services(rest: &[String]) -> Result<i32> {
    let p = parse(rest, &[("tags", Kind::Bool), ("node", Kind::Value)])?;
    let c = Client::new(&p);
    let services: BTreeMap<String, Vec<String>> = match p.value("node") {
        Some(n) => {
            let v: Value = serde_json::from_slice(
                &c.call(
                    reqwest::Method::GET,
                    &format!("/v1/catalog/node/{n}{}", qs(&p, &[])),
                    None,
                )
                .await?,
            )?;
            let mut m = BTreeMap::new();
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
