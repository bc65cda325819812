//! `muster acl bootstrap|set-agent-token|policy|token|role`: ACL administration through the agent's
//! `/v1/acl/*`, with Consul's flags and its "pretty" output (`command/acl/*/formatter.go`).
//! Policies and roles are in `policy.rs`, tokens in `token.rs`, auth methods in
//! `auth_method.rs`, binding rules in `binding_rule.rs`; `muster login`/`logout` (in
//! `cli/login.rs`) have their rows here too.

mod auth_method;
mod binding_rule;
mod policy;
mod token;

use serde_json::Value;

use super::client::Client;
use super::error::{Error, Result};
use super::help::{Flag, Http};
use super::{Command, Run};
use crate::flags::Parsed;

/// The ACL rows of the dispatch table.
pub(super) const COMMANDS: &[Command] = &[
    family("acl", "Interact with Consul's ACLs", ACL_USAGE),
    client(
        "acl bootstrap",
        "Bootstrap Consul's ACL system",
        BOOTSTRAP_USAGE,
        &[],
        |p| Box::pin(bootstrap(p)),
    ),
    client(
        "acl set-agent-token",
        "Assign tokens for the Consul Agent's usage",
        SET_AGENT_TOKEN_USAGE,
        &[],
        |p| Box::pin(set_agent_token(p)),
    ),
    family(
        "acl policy",
        "Manage Consul's ACL policies",
        policy::POLICY_USAGE,
    ),
    client(
        "acl policy create",
        "Create an ACL policy",
        policy::CREATE_USAGE,
        policy::POLICY_FLAGS,
        |p| Box::pin(policy::policy_create(p)),
    ),
    client(
        "acl policy list",
        "Lists ACL policies",
        policy::LIST_USAGE,
        &[],
        |p| Box::pin(policy::policy_list(p)),
    ),
    client(
        "acl policy read",
        "Read an ACL policy",
        policy::READ_USAGE,
        policy::ID_FLAGS,
        |p| Box::pin(policy::policy_read(p)),
    ),
    client(
        "acl policy update",
        "Update an ACL policy",
        policy::UPDATE_USAGE,
        policy::POLICY_FLAGS,
        |p| Box::pin(policy::policy_update(p)),
    ),
    client(
        "acl policy delete",
        "Delete an ACL policy",
        policy::DELETE_USAGE,
        policy::ID_FLAGS,
        |p| Box::pin(policy::policy_delete(p)),
    ),
    family("acl role", "Manage Consul's ACL roles", policy::ROLE_USAGE),
    client(
        "acl role create",
        "Create an ACL role",
        policy::ROLE_CREATE_USAGE,
        policy::ROLE_FLAGS,
        |p| Box::pin(policy::role_create(p)),
    ),
    client(
        "acl role list",
        "Lists ACL roles",
        policy::ROLE_LIST_USAGE,
        &[],
        |p| Box::pin(policy::role_list(p)),
    ),
    client(
        "acl role read",
        "Read an ACL role",
        policy::ROLE_READ_USAGE,
        policy::ID_FLAGS,
        |p| Box::pin(policy::role_read(p)),
    ),
    client(
        "acl role update",
        "Update an ACL role",
        policy::ROLE_UPDATE_USAGE,
        policy::ROLE_FLAGS,
        |p| Box::pin(policy::role_update(p)),
    ),
    client(
        "acl role delete",
        "Delete an ACL role",
        policy::ROLE_DELETE_USAGE,
        policy::ID_FLAGS,
        |p| Box::pin(policy::role_delete(p)),
    ),
    family(
        "acl token",
        "Manage Consul's ACL tokens",
        token::TOKEN_USAGE,
    ),
    client(
        "acl token create",
        "Create an ACL token",
        token::CREATE_USAGE,
        token::TOKEN_FLAGS,
        |p| Box::pin(token::token_create(p)),
    ),
    client(
        "acl token list",
        "List ACL tokens",
        token::LIST_USAGE,
        &[],
        |p| Box::pin(token::token_list(p)),
    ),
    client(
        "acl token read",
        "Read an ACL token",
        token::READ_USAGE,
        token::READ_FLAGS,
        |p| Box::pin(token::token_read(p)),
    ),
    client(
        "acl token update",
        "Update an ACL token",
        token::UPDATE_USAGE,
        token::TOKEN_FLAGS,
        |p| Box::pin(token::token_update(p)),
    ),
    client(
        "acl token clone",
        "Clone an ACL token",
        token::CLONE_USAGE,
        token::CLONE_FLAGS,
        |p| Box::pin(token::token_clone(p)),
    ),
    client(
        "acl token delete",
        "Delete an ACL token",
        token::DELETE_USAGE,
        token::READ_FLAGS,
        |p| Box::pin(token::token_delete(p)),
    ),
    family(
        "acl auth-method",
        "Manage Consul's ACL auth methods",
        auth_method::USAGE,
    ),
    client(
        "acl auth-method create",
        "Create an ACL auth method",
        auth_method::CREATE_USAGE,
        auth_method::WRITE_FLAGS,
        |p| Box::pin(auth_method::create(p)),
    ),
    client(
        "acl auth-method list",
        "Lists ACL auth methods",
        auth_method::LIST_USAGE,
        auth_method::LIST_FLAGS,
        |p| Box::pin(auth_method::list(p)),
    ),
    client(
        "acl auth-method read",
        "Read an ACL auth method",
        auth_method::READ_USAGE,
        auth_method::NAME_FLAGS,
        |p| Box::pin(auth_method::read(p)),
    ),
    client(
        "acl auth-method update",
        "Update an ACL auth method",
        auth_method::UPDATE_USAGE,
        auth_method::WRITE_FLAGS,
        |p| Box::pin(auth_method::update(p)),
    ),
    client(
        "acl auth-method delete",
        "Delete an ACL auth method",
        auth_method::DELETE_USAGE,
        auth_method::NAME_FLAGS,
        |p| Box::pin(auth_method::delete(p)),
    ),
    family(
        "acl binding-rule",
        "Manage Consul's ACL binding rules",
        binding_rule::USAGE,
    ),
    client(
        "acl binding-rule create",
        "Create an ACL binding rule",
        binding_rule::CREATE_USAGE,
        binding_rule::WRITE_FLAGS,
        |p| Box::pin(binding_rule::create(p)),
    ),
    client(
        "acl binding-rule list",
        "Lists ACL binding rules",
        binding_rule::LIST_USAGE,
        binding_rule::LIST_FLAGS,
        |p| Box::pin(binding_rule::list(p)),
    ),
    client(
        "acl binding-rule read",
        "Read an ACL binding rule",
        binding_rule::READ_USAGE,
        binding_rule::ID_FLAGS,
        |p| Box::pin(binding_rule::read(p)),
    ),
    client(
        "acl binding-rule update",
        "Update an ACL binding rule",
        binding_rule::UPDATE_USAGE,
        binding_rule::WRITE_FLAGS,
        |p| Box::pin(binding_rule::update(p)),
    ),
    client(
        "acl binding-rule delete",
        "Delete an ACL binding rule",
        binding_rule::DELETE_USAGE,
        binding_rule::ID_FLAGS,
        |p| Box::pin(binding_rule::delete(p)),
    ),
    client(
        "login",
        "Login to Consul using an auth method",
        super::login::LOGIN_USAGE,
        super::login::LOGIN_FLAGS,
        |p| Box::pin(super::login::login(p)),
    ),
    client(
        "logout",
        "Destroy a Consul token created with login",
        super::login::LOGOUT_USAGE,
        &[],
        |p| Box::pin(super::login::logout(p)),
    ),
];

const fn family(name: &'static str, synopsis: &'static str, usage: &'static str) -> Command {
    Command {
        name,
        synopsis,
        usage,
        http: Http::None,
        flags: &[],
        run: Run::Family,
    }
}

const fn client(
    name: &'static str,
    synopsis: &'static str,
    usage: &'static str,
    flags: &'static [Flag],
    run: super::ClientFn,
) -> Command {
    Command {
        name,
        synopsis,
        usage,
        http: Http::Client,
        flags,
        run: Run::Client(run),
    }
}

const ACL_USAGE: &str = "
Usage: muster acl <subcommand> [options] [args]

  This command has subcommands for interacting with Consul's ACLs.
  Here are some simple examples, and more detailed examples are available
  in the subcommands or the documentation.

  Bootstrap ACLs:

      $ muster acl bootstrap

  List all ACL tokens:

      $ muster acl token list

  Create a new ACL policy:

      $ muster acl policy create -name \"new-policy\" \\
                                 -description \"This is an example policy\" \\
                                 -rules @rules.hcl

  For more examples, ask for subcommand help or view the documentation.
";

const BOOTSTRAP_USAGE: &str = "
Usage: muster acl bootstrap [options]

  The bootstrap command will request Consul to generate a new token with unlimited privileges
  to use for management purposes and output its details. This can only be done once and
  afterwards bootstrapping will be disabled. If all tokens are lost and you need to bootstrap
  again you can follow the bootstrap reset procedure
";

async fn bootstrap(p: &Parsed) -> Result<i32> {
    let c = Client::new(p)?;
    let (code, body) = c
        .send(reqwest::Method::PUT, "/v1/acl/bootstrap", None)
        .await?;
    if !(200..300).contains(&code) {
        let e = Error::status(code, &body);
        return Err(e.context("Failed ACL bootstrapping"));
    }
    let t: Value = serde_json::from_slice(&body)?;
    print!("{}", token::format(&t));
    Ok(0)
}

const SET_AGENT_TOKEN_USAGE: &str = "
Usage: muster acl set-agent-token [options] TYPE TOKEN

  This command will set the corresponding token for the agent to use. If token persistence
  is enabled (acl.enable_token_persistence), the token is written to the agent's data dir
  and used again after a restart. TYPE is one of: default, agent, agent_recovery (or
  agent_master), replication, config_file_service_registration.

      $ muster acl set-agent-token default c4d0f8df-3aba-4ab6-a7a0-35b760dc29a1
";

async fn set_agent_token(p: &Parsed) -> Result<i32> {
    let [kind, token] = &p.positional[..] else {
        return Err(Error::usage(format!(
            "Missing TYPE and TOKEN arguments (expected 2, got {})",
            p.positional.len()
        )));
    };
    let c = Client::new(p)?;
    let body = serde_json::json!({ "Token": token })
        .to_string()
        .into_bytes();
    let (code, bytes) = c
        .send(
            reqwest::Method::PUT,
            &format!("/v1/agent/token/{kind}"),
            Some(body),
        )
        .await?;
    if !(200..300).contains(&code) {
        let e = Error::status(code, &bytes);
        return Err(e.context(format!("Failed setting token \"{kind}\"")));
    }
    println!("ACL token \"{kind}\" set successfully");
    Ok(0)
}

/// Sends a request with a JSON body and decodes the 2xx JSON answer; else fails with the
/// agent's message under `what`.
async fn reply(
    c: &Client,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    what: &str,
) -> Result<Value> {
    let body = body.map(|b| b.to_string().into_bytes());
    let (code, bytes) = c.send(method, path, body).await?;
    if !(200..300).contains(&code) {
        return Err(Error::status(code, &bytes).context(what));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// A string field of an API answer.
fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `   ID - Name` lines for a list of links.
fn links(v: &Value, k: &str, title: &str, out: &mut String) {
    let Some(l) = v.get(k).and_then(Value::as_array).filter(|l| !l.is_empty()) else {
        return;
    };
    out.push_str(&format!("{title}:\n"));
    for x in l {
        out.push_str(&format!("   {} - {}\n", s(x, "ID"), s(x, "Name")));
    }
}

/// Service and node identities, as Consul's formatter lists them.
fn identities(v: &Value, out: &mut String) {
    if let Some(l) = v
        .get("ServiceIdentities")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
    {
        out.push_str("Service Identities:\n");
        for x in l {
            let dcs: Vec<&str> = x["Datacenters"]
                .as_array()
                .map(|d| d.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let dcs = if dcs.is_empty() {
                "all".to_string()
            } else {
                dcs.join(", ")
            };
            out.push_str(&format!(
                "   {} (Datacenters: {dcs})\n",
                s(x, "ServiceName")
            ));
        }
    }
    if let Some(l) = v
        .get("NodeIdentities")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
    {
        out.push_str("Node Identities:\n");
        for x in l {
            out.push_str(&format!(
                "   {} (Datacenter: {})\n",
                s(x, "NodeName"),
                s(x, "Datacenter")
            ));
        }
    }
}

/// `-service-identity NAME[:DC1,DC2]` and `-node-identity NAME:DC` values as request JSON.
fn identity_flags(p: &Parsed) -> Result<(Value, Value)> {
    let svc: Vec<Value> = p
        .all("service-identity")
        .iter()
        .map(|x| match x.split_once(':') {
            Some((n, dcs)) => serde_json::json!({"ServiceName": n, "Datacenters": dcs.split(',').collect::<Vec<_>>()}),
            None => serde_json::json!({"ServiceName": x}),
        })
        .collect();
    let mut node = Vec::new();
    for x in p.all("node-identity") {
        let Some((n, dc)) = x.split_once(':') else {
            return Err(Error::usage(format!(
                "Malformed -node-identity argument: {x:?}"
            )));
        };
        node.push(serde_json::json!({"NodeName": n, "Datacenter": dc}));
    }
    Ok((Value::Array(svc), Value::Array(node)))
}

/// `-policy-id`/`-policy-name` (or `-role-id`/`-role-name`) values as request links.
fn link_flags(p: &Parsed, kind: &str) -> Value {
    let ids = p
        .all(&format!("{kind}-id"))
        .iter()
        .map(|i| serde_json::json!({"ID": i}));
    let names = p
        .all(&format!("{kind}-name"))
        .iter()
        .map(|n| serde_json::json!({"Name": n}));
    Value::Array(ids.chain(names).collect())
}

/// Consul prints Go's `time.Time`: `2006-01-02 15:04:05.999999999 +0000 UTC`.
fn go_time(rfc3339: &str) -> String {
    match rfc3339.strip_suffix('Z') {
        Some(t) => format!("{} +0000 UTC", t.replacen('T', " ", 1)),
        None => rfc3339.replacen('T', " ", 1),
    }
}
