//! `muster acl policy …` and `muster acl role …`: create, list, read, update, delete.

use reqwest::Method;
use serde_json::{json, Value};

use super::{identities, identity_flags, link_flags, links, reply, s};
use crate::cli::client::{url_escape, Client};
use crate::cli::error::{Error, Result};
use crate::cli::help::Flag;
use crate::flags::Parsed;

pub(super) const POLICY_USAGE: &str = "
Usage: muster acl policy <subcommand> [options] [args]

  This command has subcommands for managing Consul's ACL policies.

  Create a new ACL policy:

      $ muster acl policy create -name \"new-policy\" \\
                                 -description \"This is an example policy\" \\
                                 -rules @rules.hcl
  List all policies:

      $ muster acl policy list

  For more examples, ask for subcommand help or view the documentation.
";
pub(super) const CREATE_USAGE: &str = "
Usage: muster acl policy create -name NAME [options]

  Both the -rules and -from-file options may be given the value '@path' to
  read the rules from a file.
";
pub(super) const LIST_USAGE: &str = "
Usage: muster acl policy list [options]

  Lists all the ACL policies.
";
pub(super) const READ_USAGE: &str = "
Usage: muster acl policy read [options] POLICY

  This command will retrieve and print out the details of a single policy.
";
pub(super) const UPDATE_USAGE: &str = "
Usage: muster acl policy update [options]

  Updates a policy. By default it will merge the policy information with its
  current state so that you do not have to provide all parameters.
";
pub(super) const DELETE_USAGE: &str = "
Usage: muster acl policy delete [options] -id POLICY

  Deletes an ACL policy by providing either the ID or a unique ID prefix.
";
pub(super) const ROLE_USAGE: &str = "
Usage: muster acl role <subcommand> [options] [args]

  This command has subcommands for managing Consul's ACL roles.
";
pub(super) const ROLE_CREATE_USAGE: &str = "
Usage: muster acl role create -name NAME [options]

  Create a new role.
";
pub(super) const ROLE_LIST_USAGE: &str = "
Usage: muster acl role list [options]

  Lists all the ACL roles.
";
pub(super) const ROLE_READ_USAGE: &str = "
Usage: muster acl role read [options] ROLE

  This command will retrieve and print out the details of a single role.
";
pub(super) const ROLE_UPDATE_USAGE: &str = "
Usage: muster acl role update [options]

  Updates a role. By default it will merge the role information with its
  current state so that you do not have to provide all parameters.
";
pub(super) const ROLE_DELETE_USAGE: &str = "
Usage: muster acl role delete [options] -id ROLE

  Deletes an ACL role by providing either the ID or a unique ID prefix.
";

pub(super) const POLICY_FLAGS: &[Flag] = &[
    Flag::value("id", "string", "The ID of the policy to update."),
    Flag::value("name", "string", "The new policy's name. This flag is required."),
    Flag::value("description", "string", "A description of the policy"),
    Flag::value("rules", "string", "The policy rules. May be prefixed with '@' to indicate that the value is a file path to load the rules from."),
    Flag::multi("valid-datacenter", "value", "Datacenter that the policy should be valid within. This flag may be specified multiple times"),
];
pub(super) const ROLE_FLAGS: &[Flag] = &[
    Flag::value("id", "string", "The ID of the role to update."),
    Flag::value("name", "string", "The new role's name. This flag is required."),
    Flag::value("description", "string", "A description of the role"),
    Flag::multi("policy-id", "value", "ID of a policy to use for this role. May be specified multiple times"),
    Flag::multi("policy-name", "value", "Name of a policy to use for this role. May be specified multiple times"),
    Flag::multi("service-identity", "value", "Name of a service identity to use for this role. May be specified multiple times. Format is the SERVICENAME or SERVICENAME:DATACENTER1,DATACENTER2,..."),
    Flag::multi("node-identity", "value", "Name of a node identity to use for this role. May be specified multiple times. Format is NODENAME:DATACENTER"),
];
pub(super) const ID_FLAGS: &[Flag] = &[
    Flag::value("id", "string", "The ID to act on."),
    Flag::value("name", "string", "The name to act on."),
];

pub(super) fn format_policy(v: &Value) -> String {
    let dcs: Vec<&str> = v["Datacenters"]
        .as_array()
        .map(|d| d.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = format!(
        "ID:           {}\nName:         {}\nDescription:  {}\nDatacenters:  {}\n",
        s(v, "ID"),
        s(v, "Name"),
        s(v, "Description"),
        dcs.join(", ")
    );
    if v.get("Rules").is_some() {
        out.push_str(&format!("Rules:\n{}\n", s(v, "Rules")));
    }
    out
}

pub(super) fn format_role(v: &Value) -> String {
    let mut out = format!(
        "ID:           {}\nName:         {}\nDescription:  {}\n",
        s(v, "ID"),
        s(v, "Name"),
        s(v, "Description")
    );
    links(v, "Policies", "Policies", &mut out);
    identities(v, &mut out);
    out
}

/// `-rules`, read from a file when it starts with `@`.
fn rules(p: &Parsed) -> Result<Option<String>> {
    match p.value("rules") {
        Some(r) => match r.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map(Some)
                .map_err(|e| Error::usage(format!("Failed to load data: {e}"))),
            None => Ok(Some(r.to_string())),
        },
        None => Ok(None),
    }
}

/// The path of the record `-id`, `-name` or the first argument names.
fn target(p: &Parsed, kind: &str) -> Result<String> {
    if let Some(id) = p.value("id").filter(|i| !i.is_empty()) {
        return Ok(format!("/v1/acl/{kind}/{}", url_escape(id)));
    }
    if let Some(name) = p.value("name").or(p.positional.first().map(String::as_str)) {
        return Ok(format!("/v1/acl/{kind}/name/{}", url_escape(name)));
    }
    Err(Error::usage(
        "Must specify either the -id or -name parameters",
    ))
}

fn required_name(p: &Parsed) -> Result<&str> {
    p.value("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::usage("Missing required '-name' flag"))
}

pub(super) async fn policy_create(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let b = json!({
        "Name": required_name(p)?,
        "Description": p.value("description").unwrap_or(""),
        "Rules": rules(p)?.unwrap_or_default(),
        "Datacenters": p.all("valid-datacenter"),
    });
    let v = reply(
        &c,
        Method::PUT,
        "/v1/acl/policy",
        Some(b),
        "Failed to create new policy",
    )
    .await?;
    print!("{}", format_policy(&v));
    Ok(0)
}

pub(super) async fn policy_update(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let id = p.value("id").ok_or_else(|| {
        Error::usage("Cannot update a policy without specifying the -id parameter")
    })?;
    let path = format!("/v1/acl/policy/{}", url_escape(id));
    let mut b = reply(
        &c,
        Method::GET,
        &path,
        None,
        "Error when retrieving current policy",
    )
    .await?;
    if let Some(n) = p.value("name") {
        b["Name"] = json!(n);
    }
    if let Some(d) = p.value("description") {
        b["Description"] = json!(d);
    }
    if let Some(r) = rules(p)? {
        b["Rules"] = json!(r);
    }
    let v = reply(
        &c,
        Method::PUT,
        &path,
        Some(b),
        &format!("Failed to update policy {id}"),
    )
    .await?;
    print!("{}", format_policy(&v));
    Ok(0)
}

pub(super) async fn policy_read(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let v = reply(
        &c,
        Method::GET,
        &target(p, "policy")?,
        None,
        "Error reading policy",
    )
    .await?;
    print!("{}", format_policy(&v));
    Ok(0)
}

pub(super) async fn policy_list(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let l = reply(
        &c,
        Method::GET,
        "/v1/acl/policies",
        None,
        "Failed to retrieve the policy list",
    )
    .await?;
    let items: Vec<String> = l
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| {
            format!(
                "{}:\n   ID:           {}\n   Description:  {}\n   Datacenters:  \n",
                s(v, "Name"),
                s(v, "ID"),
                s(v, "Description")
            )
        })
        .collect();
    print!("{}", items.concat());
    Ok(0)
}

pub(super) async fn policy_delete(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let id = p
        .value("id")
        .ok_or_else(|| Error::usage("Must specify the -id or -name parameter"))?;
    let path = format!("/v1/acl/policy/{}", url_escape(id));
    reply(
        &c,
        Method::DELETE,
        &path,
        None,
        &format!("Error deleting policy {id:?}"),
    )
    .await?;
    println!("Policy {id:?} deleted successfully");
    Ok(0)
}

fn role_body(p: &Parsed) -> Result<Value> {
    let (svc, node) = identity_flags(p)?;
    Ok(json!({
        "Name": p.value("name").unwrap_or(""),
        "Description": p.value("description").unwrap_or(""),
        "Policies": link_flags(p, "policy"),
        "ServiceIdentities": svc,
        "NodeIdentities": node,
    }))
}

pub(super) async fn role_create(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    required_name(p)?;
    let v = reply(
        &c,
        Method::PUT,
        "/v1/acl/role",
        Some(role_body(p)?),
        "Failed to create new role",
    )
    .await?;
    print!("{}", format_role(&v));
    Ok(0)
}

pub(super) async fn role_update(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let id = p
        .value("id")
        .ok_or_else(|| Error::usage("Cannot update a role without specifying the -id parameter"))?;
    let path = format!("/v1/acl/role/{}", url_escape(id));
    let old = reply(
        &c,
        Method::GET,
        &path,
        None,
        "Error when retrieving current role",
    )
    .await?;
    let mut b = role_body(p)?;
    for k in ["Name", "Description"] {
        if b[k] == "" {
            b[k] = old[k].clone();
        }
    }
    for k in ["Policies", "ServiceIdentities", "NodeIdentities"] {
        let mut all: Vec<Value> = old[k].as_array().cloned().unwrap_or_default();
        all.extend(b[k].as_array().cloned().unwrap_or_default());
        b[k] = Value::Array(all);
    }
    let v = reply(
        &c,
        Method::PUT,
        &path,
        Some(b),
        &format!("Failed to update role {id}"),
    )
    .await?;
    print!("{}", format_role(&v));
    Ok(0)
}

pub(super) async fn role_read(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let v = reply(
        &c,
        Method::GET,
        &target(p, "role")?,
        None,
        "Error reading role",
    )
    .await?;
    print!("{}", format_role(&v));
    Ok(0)
}

pub(super) async fn role_list(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let l = reply(
        &c,
        Method::GET,
        "/v1/acl/roles",
        None,
        "Failed to retrieve the role list",
    )
    .await?;
    let items: Vec<String> = l
        .as_array()
        .into_iter()
        .flatten()
        .map(format_role)
        .collect();
    print!("{}", items.join("\n"));
    Ok(0)
}

pub(super) async fn role_delete(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let id = p
        .value("id")
        .ok_or_else(|| Error::usage("Must specify the -id or -name parameter"))?;
    let path = format!("/v1/acl/role/{}", url_escape(id));
    reply(
        &c,
        Method::DELETE,
        &path,
        None,
        &format!("Error deleting role {id:?}"),
    )
    .await?;
    println!("Role {id:?} deleted successfully");
    Ok(0)
}
