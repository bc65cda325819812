//! `muster acl token create|list|read|update|clone|delete`.

use reqwest::Method;
use serde_json::{json, Value};

use super::{go_time, identities, identity_flags, link_flags, links, reply, s};
use crate::cli::client::{url_escape, Client};
use crate::cli::error::{Error, Result};
use crate::cli::help::Flag;
use crate::flags::Parsed;

pub(super) const TOKEN_USAGE: &str = "
Usage: muster acl token <subcommand> [options] [args]

  This command has subcommands for managing Consul's ACL tokens.

  Create a new ACL token:

      $ muster acl token create -description \"This is an example token\" \\
                                -policy-id 06acc965
  List all tokens:

      $ muster acl token list

  For more examples, ask for subcommand help or view the documentation.
";
pub(super) const CREATE_USAGE: &str = "
Usage: muster acl token create [options]

  When creating a new token policies may be linked using either the -policy-id
  or the -policy-name options. When specifying policies by IDs you may use a
  unique prefix of the UUID as a shortcut for specifying the entire UUID.
";
pub(super) const LIST_USAGE: &str = "
Usage: muster acl token list [options]

  Lists all the ACL tokens.
";
pub(super) const READ_USAGE: &str = "
Usage: muster acl token read [options] -id TOKENID

  This command will retrieve and print out the details of a single token.
";
pub(super) const UPDATE_USAGE: &str = "
Usage: muster acl token update [options]

  This command will update a token. Some parts such as marking the token local
  cannot be changed.
";
pub(super) const CLONE_USAGE: &str = "
Usage: muster acl token clone [options]

  This command will clone a token. When cloning an alternate description may be given
  for use with the new token.
";
pub(super) const DELETE_USAGE: &str = "
Usage: muster acl token delete [options] -id TOKEN

  Deletes an ACL token by providing either the ID or a unique ID prefix.
";

pub(super) const TOKEN_FLAGS: &[Flag] = &[
    Flag::value("id", "string", "The Accessor ID of the token to update."),
    Flag::value("accessor", "string", "Create the token with this Accessor ID."),
    Flag::value("secret", "string", "Create the token with this Secret ID."),
    Flag::value("description", "string", "A description of the token"),
    Flag::multi("policy-id", "value", "ID of a policy to use for this token. May be specified multiple times"),
    Flag::multi("policy-name", "value", "Name of a policy to use for this token. May be specified multiple times"),
    Flag::multi("role-id", "value", "ID of a role to use for this token. May be specified multiple times"),
    Flag::multi("role-name", "value", "Name of a role to use for this token. May be specified multiple times"),
    Flag::multi("service-identity", "value", "Name of a service identity to use for this token. May be specified multiple times. Format is the SERVICENAME or SERVICENAME:DATACENTER1,DATACENTER2,..."),
    Flag::multi("node-identity", "value", "Name of a node identity to use for this token. May be specified multiple times. Format is NODENAME:DATACENTER"),
    Flag::value("expires-ttl", "duration", "Duration of time this token should be valid for"),
    Flag::bool("local", "Create this as a datacenter local token"),
    Flag::bool("merge-policies", "Merge the new policies with the existing policies"),
    Flag::bool("merge-roles", "Merge the new roles with the existing roles"),
];
pub(super) const READ_FLAGS: &[Flag] = &[
    Flag::value("id", "string", "The Accessor ID of the token to read."),
    Flag::bool("self", "Indicates that the current HTTP token should be read by secret ID instead of expecting a -id option"),
];
pub(super) const CLONE_FLAGS: &[Flag] = &[
    Flag::value("id", "string", "The Accessor ID of the token to clone."),
    Flag::value(
        "description",
        "string",
        "A description of the new cloned token",
    ),
];

/// A token as Consul's pretty formatter prints it.
pub(super) fn format(t: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!("AccessorID:       {}\n", s(t, "AccessorID")));
    out.push_str(&format!("SecretID:         {}\n", s(t, "SecretID")));
    out.push_str(&format!("Description:      {}\n", s(t, "Description")));
    if !s(t, "AuthMethod").is_empty() {
        let m = s(t, "AuthMethod");
        out.push_str(&format!("Auth Method:      {m} (Namespace: )\n"));
    }
    let local = t["Local"].as_bool().unwrap_or(false);
    out.push_str(&format!("Local:            {local}\n"));
    out.push_str(&format!(
        "Create Time:      {}\n",
        go_time(s(t, "CreateTime"))
    ));
    if !s(t, "ExpirationTime").is_empty() {
        out.push_str(&format!(
            "Expiration Time:  {}\n",
            go_time(s(t, "ExpirationTime"))
        ));
    }
    links(t, "Policies", "Policies", &mut out);
    links(t, "Roles", "Roles", &mut out);
    identities(t, &mut out);
    out
}

fn id(p: &Parsed) -> Result<String> {
    p.value("id")
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::usage("Must specify the -id parameter"))
}

fn body(p: &Parsed) -> Result<Value> {
    let (svc, node) = identity_flags(p)?;
    let mut b = json!({
        "Description": p.value("description").unwrap_or(""),
        "Policies": link_flags(p, "policy"),
        "Roles": link_flags(p, "role"),
        "ServiceIdentities": svc,
        "NodeIdentities": node,
        "Local": p.bool("local"),
    });
    if let Some(ttl) = p.value("expires-ttl") {
        b["ExpirationTTL"] = json!(ttl);
    }
    if let Some(a) = p.value("accessor") {
        b["AccessorID"] = json!(a);
    }
    if let Some(sec) = p.value("secret") {
        b["SecretID"] = json!(sec);
    }
    Ok(b)
}

pub(super) async fn token_create(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let t = reply(
        &c,
        Method::PUT,
        "/v1/acl/token",
        Some(body(p)?),
        "Failed to create new token",
    )
    .await?;
    print!("{}", format(&t));
    Ok(0)
}

pub(super) async fn token_update(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let id = id(p)?;
    let path = format!("/v1/acl/token/{}", url_escape(&id));
    let old = reply(
        &c,
        Method::GET,
        &path,
        None,
        "Error when retrieving current token",
    )
    .await?;
    let mut b = body(p)?;
    // Consul keeps what a flag does not replace (and merges when asked).
    for (k, merge) in [("Policies", "merge-policies"), ("Roles", "merge-roles")] {
        let given = b[k].as_array().is_some_and(|l| !l.is_empty());
        if !given || p.bool(merge) {
            let mut all: Vec<Value> = old[k].as_array().cloned().unwrap_or_default();
            all.extend(b[k].as_array().cloned().unwrap_or_default());
            b[k] = Value::Array(all);
        }
    }
    if p.value("description").is_none() {
        b["Description"] = old["Description"].clone();
    }
    for k in ["ServiceIdentities", "NodeIdentities"] {
        if b[k].as_array().is_none_or(Vec::is_empty) {
            b[k] = old[k].clone();
        }
    }
    b["Local"] = old["Local"].clone();
    b["AccessorID"] = json!(id);
    let t = reply(&c, Method::PUT, &path, Some(b), "Failed to update token").await?;
    println!("Token updated successfully.");
    print!("{}", format(&t));
    Ok(0)
}

pub(super) async fn token_read(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let path = if p.bool("self") {
        "/v1/acl/token/self".to_string()
    } else {
        format!("/v1/acl/token/{}", url_escape(&id(p)?))
    };
    let t = reply(&c, Method::GET, &path, None, "Error reading token").await?;
    print!("{}", format(&t));
    Ok(0)
}

pub(super) async fn token_list(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let l = reply(
        &c,
        Method::GET,
        "/v1/acl/tokens",
        None,
        "Failed to retrieve the token list",
    )
    .await?;
    let items: Vec<String> = l.as_array().into_iter().flatten().map(format).collect();
    print!("{}", items.join("\n"));
    Ok(0)
}

pub(super) async fn token_clone(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let path = format!("/v1/acl/token/{}/clone", url_escape(&id(p)?));
    let b = json!({ "Description": p.value("description").unwrap_or("") });
    let t = reply(&c, Method::PUT, &path, Some(b), "Failed to clone token").await?;
    println!("Token cloned successfully.");
    print!("{}", format(&t));
    Ok(0)
}

pub(super) async fn token_delete(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let id = id(p)?;
    let path = format!("/v1/acl/token/{}", url_escape(&id));
    reply(
        &c,
        Method::DELETE,
        &path,
        None,
        &format!("Error deleting token {id:?}"),
    )
    .await?;
    println!("Token {id:?} deleted successfully");
    Ok(0)
}
