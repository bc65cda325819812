//! `muster acl binding-rule create|list|read|update|delete`, with Consul's flags and its
//! pretty and JSON output (`command/acl/bindingrule`).

use reqwest::Method;
use serde_json::{json, Value};

use super::auth_method::{indented, json_format};
use super::{reply, s};
use crate::cli::client::{url_escape, Client};
use crate::cli::error::{Error, Result};
use crate::cli::help::Flag;
use crate::flags::Parsed;

pub(super) const USAGE: &str = "
Usage: muster acl binding-rule <subcommand> [options] [args]

  This command has subcommands for managing Consul's ACL binding rules.

  Create a new binding rule:

      $ muster acl binding-rule create -method=my-jwt \\
                                       -bind-type=service \\
                                       -bind-name='${value.service}' \\
                                       -selector='value.team==web'
  List all binding rules:

      $ muster acl binding-rule list

  For more examples, ask for subcommand help or view the documentation.
";
pub(super) const CREATE_USAGE: &str = "
Usage: muster acl binding-rule create -method=NAME -bind-type=TYPE -bind-name=NAME [options]

  Create a new binding rule for an auth method. BindType is one of service, node, role or
  policy.
";
pub(super) const LIST_USAGE: &str = "
Usage: muster acl binding-rule list [options]

  Lists all the ACL binding rules, or those of one auth method with -method.
";
pub(super) const READ_USAGE: &str = "
Usage: muster acl binding-rule read -id ID [options]

  This command will retrieve and print out the details of a single binding rule.
";
pub(super) const UPDATE_USAGE: &str = "
Usage: muster acl binding-rule update -id ID [options]

  Updates a binding rule. By default it will merge the binding rule information with its
  current state so that you do not have to provide all parameters. This behavior can be
  disabled by passing -no-merge.
";
pub(super) const DELETE_USAGE: &str = "
Usage: muster acl binding-rule delete -id ID [options]

  Deletes an ACL binding rule by providing its ID.
";

const FORMAT: Flag = Flag::value(
    "format",
    "string",
    "Output format. Must be one of (pretty|json)",
);
pub(super) const WRITE_FLAGS: &[Flag] = &[
    Flag::value("id", "string", "The ID of the binding rule to update."),
    Flag::value("method", "string", "The auth method's name for which this binding rule applies. This flag is required."),
    Flag::value("description", "string", "A description of the binding rule."),
    Flag::value("selector", "string", "Selector is an expression that matches against verified identity attributes returned from the auth method during login."),
    Flag::value("bind-type", "string", "Type of binding to perform (\"service\", \"node\", \"role\" or \"policy\")."),
    Flag::value("bind-name", "string", "Name to bind on match. Can use ${var} interpolation. This flag is required."),
    Flag::bool("no-merge", "Do not merge the current binding rule information with what is provided to the command. Instead overwrite all fields with the exception of the binding rule ID which is immutable."),
    FORMAT,
];
pub(super) const ID_FLAGS: &[Flag] = &[
    Flag::value("id", "string", "The ID of the binding rule."),
    FORMAT,
];
pub(super) const LIST_FLAGS: &[Flag] = &[
    Flag::value(
        "method",
        "string",
        "Only show rules linked to the auth method with the given name.",
    ),
    FORMAT,
];

fn format(r: &Value, indent: &str) -> String {
    let mut out = String::new();
    for (label, key) in [
        ("AuthMethod:  ", "AuthMethod"),
        ("Description: ", "Description"),
        ("BindType:    ", "BindType"),
        ("BindName:    ", "BindName"),
        ("Selector:    ", "Selector"),
    ] {
        out.push_str(&format!("{indent}{label} {}\n", s(r, key)));
    }
    out
}

fn print(p: &Parsed, r: &Value) -> Result<i32> {
    if json_format(p)? {
        println!("{}", indented(r));
    } else {
        print!("ID:           {}\n{}", s(r, "ID"), format(r, ""));
    }
    Ok(0)
}

fn id(p: &Parsed) -> Result<String> {
    p.value("id")
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::usage("Must specify the -id parameter"))
}

/// The flags given, over `base` (an empty object to create, the current rule to merge).
fn apply_flags(p: &Parsed, mut base: Value) -> Value {
    for (flag, key) in [
        ("method", "AuthMethod"),
        ("description", "Description"),
        ("selector", "Selector"),
        ("bind-type", "BindType"),
        ("bind-name", "BindName"),
    ] {
        if let Some(v) = p.value(flag) {
            base[key] = json!(v);
        }
    }
    base
}

pub(super) async fn create(p: &Parsed) -> Result<i32> {
    json_format(p)?;
    for (flag, what) in [
        ("method", "-method"),
        ("bind-type", "-bind-type"),
        ("bind-name", "-bind-name"),
    ] {
        if p.value(flag).is_none_or(str::is_empty) {
            return Err(Error::usage(format!("Missing required '{what}' flag")));
        }
    }
    let c = Client::new(p)?;
    let r = reply(
        &c,
        Method::PUT,
        "/v1/acl/binding-rule",
        Some(apply_flags(p, json!({}))),
        "Failed to create new binding rule",
    )
    .await?;
    print(p, &r)
}

/// The rule `id`, or Consul's refusal when there is none.
async fn fetch(c: &Client, id: &str, what: &str) -> Result<Value> {
    let path = format!("/v1/acl/binding-rule/{}", url_escape(id));
    let (code, bytes) = c.send(Method::GET, &path, None).await?;
    if code == 404 {
        return Err(Error::refused(format!(
            "Binding rule not found with ID {id:?}"
        )));
    }
    if !(200..300).contains(&code) {
        return Err(Error::status(code, &bytes).context(what));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

pub(super) async fn update(p: &Parsed) -> Result<i32> {
    json_format(p)?;
    let id = id(p)?;
    let c = Client::new(p)?;
    let what = format!("Error updating binding rule {id:?}");
    let base = if p.bool("no-merge") {
        json!({ "ID": id })
    } else {
        fetch(&c, &id, &what).await?
    };
    let path = format!("/v1/acl/binding-rule/{}", url_escape(&id));
    let r = reply(&c, Method::PUT, &path, Some(apply_flags(p, base)), &what).await?;
    print(p, &r)
}

pub(super) async fn read(p: &Parsed) -> Result<i32> {
    json_format(p)?;
    let id = id(p)?;
    let c = Client::new(p)?;
    let r = fetch(&c, &id, &format!("Error reading binding rule {id:?}")).await?;
    print(p, &r)
}

pub(super) async fn list(p: &Parsed) -> Result<i32> {
    let as_json = json_format(p)?;
    let c = Client::new(p)?;
    let path = match p.value("method").filter(|m| !m.is_empty()) {
        Some(m) => format!("/v1/acl/binding-rules?authmethod={}", url_escape(m)),
        None => "/v1/acl/binding-rules".to_string(),
    };
    let what = "Failed to retrieve the binding rule list";
    let l = reply(&c, Method::GET, &path, None, what).await?;
    if as_json {
        println!("{}", indented(&l));
        return Ok(0);
    }
    for r in l.as_array().into_iter().flatten() {
        print!("{}:\n{}", s(r, "ID"), format(r, "   "));
    }
    Ok(0)
}

pub(super) async fn delete(p: &Parsed) -> Result<i32> {
    let id = id(p)?;
    let c = Client::new(p)?;
    let path = format!("/v1/acl/binding-rule/{}", url_escape(&id));
    reply(
        &c,
        Method::DELETE,
        &path,
        None,
        "Error deleting binding rule",
    )
    .await?;
    println!("Binding rule {id:?} deleted successfully");
    Ok(0)
}
