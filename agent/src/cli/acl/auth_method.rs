//! `muster acl auth-method create|list|read|update|delete`, with Consul's flags and its
//! pretty and JSON output (`command/acl/authmethod`).

use reqwest::Method;
use serde_json::{json, Value};

use super::{reply, s};
use crate::cli::client::{url_escape, Client};
use crate::cli::error::{Error, Result};
use crate::cli::help::Flag;
use crate::flags::Parsed;

pub(super) const USAGE: &str = "
Usage: muster acl auth-method <subcommand> [options] [args]

  This command has subcommands for managing Consul's ACL auth methods.

  Create a new auth method:

      $ muster acl auth-method create -type jwt -name my-jwt \\
                                      -config @jwt-config.json
  List all auth methods:

      $ muster acl auth-method list

  For more examples, ask for subcommand help or view the documentation.
";
pub(super) const CREATE_USAGE: &str = "
Usage: muster acl auth-method create -name NAME -type TYPE [options]

  Create a new auth method. Only the jwt type is available. The -config value is JSON, or
  '@path' to read it from a file.
";
pub(super) const LIST_USAGE: &str = "
Usage: muster acl auth-method list [options]

  List all auth methods.
";
pub(super) const READ_USAGE: &str = "
Usage: muster acl auth-method read -name NAME [options]

  This command will retrieve and print out the details of a single auth method.
";
pub(super) const UPDATE_USAGE: &str = "
Usage: muster acl auth-method update -name NAME [options]

  Updates an auth method. By default it will merge the auth method information with its
  current state so that you do not have to provide all parameters. This behavior can be
  disabled by passing -no-merge.
";
pub(super) const DELETE_USAGE: &str = "
Usage: muster acl auth-method delete -name NAME [options]

  Deletes an auth method by providing its name.
";

const FORMAT: Flag = Flag::value(
    "format",
    "string",
    "Output format. Must be one of (pretty|json)",
);
pub(super) const WRITE_FLAGS: &[Flag] = &[
    Flag::value("type", "string", "The new auth method's type. This flag is required."),
    Flag::value("name", "string", "The new auth method's name. This flag is required."),
    Flag::value("display-name", "string", "An optional name to use instead of the name when displaying this auth method in a UI."),
    Flag::value("description", "string", "A description of the auth method."),
    Flag::value("max-token-ttl", "duration", "Duration of time all tokens created by this auth method should be valid for"),
    Flag::value("token-locality", "string", "Defines the kind of token that this auth method should produce. This can be either 'local' or 'global'. If empty the value of 'local' is assumed."),
    Flag::value("config", "string", "The configuration for the auth method. Must be JSON. May be prefixed with '@' to indicate that the value is a file path to load the config from."),
    Flag::bool("no-merge", "Do not merge the current auth method information with what is provided to the command. Instead overwrite all fields with the exception of the name which is immutable."),
    FORMAT,
];
pub(super) const NAME_FLAGS: &[Flag] = &[
    Flag::value("name", "string", "The name of the auth method."),
    FORMAT,
];
pub(super) const LIST_FLAGS: &[Flag] = &[FORMAT];

/// `-format`: `pretty` (the default) or `json`.
pub(super) fn json_format(p: &Parsed) -> Result<bool> {
    match p.value("format").unwrap_or("pretty") {
        "pretty" => Ok(false),
        "json" => Ok(true),
        other => Err(Error::usage(format!("Unknown format: {other}"))),
    }
}

/// JSON as Consul's JSON formatters print it (`MarshalIndent` with four spaces).
pub(super) fn indented(v: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if serde::Serialize::serialize(v, &mut ser).is_err() {
        return v.to_string();
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn format(m: &Value) -> String {
    let mut out = format!(
        "Name:          {}\nType:          {}\n",
        s(m, "Name"),
        s(m, "Type")
    );
    if !s(m, "DisplayName").is_empty() {
        out.push_str(&format!("DisplayName:   {}\n", s(m, "DisplayName")));
    }
    out.push_str(&format!("Description:   {}\n", s(m, "Description")));
    if !s(m, "MaxTokenTTL").is_empty() {
        out.push_str(&format!("MaxTokenTTL:   {}\n", s(m, "MaxTokenTTL")));
    }
    if !s(m, "TokenLocality").is_empty() {
        out.push_str(&format!("TokenLocality: {}\n", s(m, "TokenLocality")));
    }
    out.push_str("Config:\n");
    out.push_str(&serde_json::to_string_pretty(&m["Config"]).unwrap_or_default());
    out.push('\n');
    out
}

fn print(p: &Parsed, m: &Value) -> Result<i32> {
    if json_format(p)? {
        println!("{}", indented(m));
    } else {
        print!("{}", format(m));
    }
    Ok(0)
}

fn name(p: &Parsed, missing: &str) -> Result<String> {
    p.value("name")
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::usage(missing))
}

/// `-config`: JSON, or `@path` to read it from a file.
fn config(p: &Parsed) -> Result<Option<Value>> {
    let Some(raw) = p.value("config").filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let text = match raw.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Error::usage(format!("Failed to load data: {e}")))?,
        None => raw.to_string(),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::usage(format!("Error parsing JSON for auth method config: {e}")))
}

/// The flags given, over `base` (an empty object to create, the current method to merge).
fn apply_flags(p: &Parsed, mut base: Value) -> Result<Value> {
    for (flag, key) in [
        ("type", "Type"),
        ("display-name", "DisplayName"),
        ("description", "Description"),
        ("max-token-ttl", "MaxTokenTTL"),
        ("token-locality", "TokenLocality"),
    ] {
        if let Some(v) = p.value(flag) {
            base[key] = json!(v);
        }
    }
    if let Some(c) = config(p)? {
        base["Config"] = c;
    }
    Ok(base)
}

pub(super) async fn create(p: &Parsed) -> Result<i32> {
    json_format(p)?;
    if p.value("type").is_none_or(str::is_empty) {
        return Err(Error::usage("Missing required '-type' flag"));
    }
    let name = name(p, "Missing required '-name' flag")?;
    let c = Client::new(p)?;
    let body = apply_flags(p, json!({ "Name": name }))?;
    let m = reply(
        &c,
        Method::PUT,
        "/v1/acl/auth-method",
        Some(body),
        "Failed to create new auth method",
    )
    .await?;
    print(p, &m)
}

pub(super) async fn update(p: &Parsed) -> Result<i32> {
    json_format(p)?;
    let name = name(
        p,
        "Cannot update an auth method without specifying the -name parameter",
    )?;
    let c = Client::new(p)?;
    let path = format!("/v1/acl/auth-method/{}", url_escape(&name));
    let what = format!("Error updating auth method {name:?}");
    let base = if p.bool("no-merge") {
        json!({ "Name": name })
    } else {
        let (code, bytes) = c.send(Method::GET, &path, None).await?;
        if code == 404 {
            return Err(Error::refused(format!(
                "Auth method not found with name {name:?}"
            )));
        }
        if !(200..300).contains(&code) {
            return Err(Error::status(code, &bytes).context(what));
        }
        serde_json::from_slice(&bytes)?
    };
    let body = apply_flags(p, base)?;
    let m = reply(&c, Method::PUT, &path, Some(body), &what).await?;
    print(p, &m)
}

pub(super) async fn read(p: &Parsed) -> Result<i32> {
    json_format(p)?;
    let name = name(p, "Must specify the -name parameter")?;
    let c = Client::new(p)?;
    let path = format!("/v1/acl/auth-method/{}", url_escape(&name));
    let (code, bytes) = c.send(Method::GET, &path, None).await?;
    if code == 404 {
        return Err(Error::refused(format!(
            "Auth method not found with name {name:?}"
        )));
    }
    if !(200..300).contains(&code) {
        let e = Error::status(code, &bytes);
        return Err(e.context(format!("Error reading auth method {name:?}")));
    }
    print(p, &serde_json::from_slice(&bytes)?)
}

pub(super) async fn list(p: &Parsed) -> Result<i32> {
    let as_json = json_format(p)?;
    let c = Client::new(p)?;
    let l = reply(
        &c,
        Method::GET,
        "/v1/acl/auth-methods",
        None,
        "Failed to retrieve the auth method list",
    )
    .await?;
    if as_json {
        println!("{}", indented(&l));
        return Ok(0);
    }
    for m in l.as_array().into_iter().flatten() {
        print!("{}:\n   Type:         {}\n", s(m, "Name"), s(m, "Type"));
        if !s(m, "DisplayName").is_empty() {
            println!("   DisplayName:  {}", s(m, "DisplayName"));
        }
        println!("   Description:  {}", s(m, "Description"));
    }
    Ok(0)
}

pub(super) async fn delete(p: &Parsed) -> Result<i32> {
    let name = name(p, "Must specify the -name parameter")?;
    let c = Client::new(p)?;
    let path = format!("/v1/acl/auth-method/{}", url_escape(&name));
    let what = format!("Error deleting auth method {name:?}");
    reply(&c, Method::DELETE, &path, None, &what).await?;
    println!("Auth-method {name:?} deleted successfully");
    Ok(0)
}
