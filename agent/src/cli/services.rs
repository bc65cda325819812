//! `muster services register|deregister`: services of the local agent, from flags or from
//! definition files read as Consul reads them (agent config files, JSON or HCL, whose
//! `service` and `services` entries are the services; Muster also takes a bare definition).

use serde_json::Value;

use super::client::Client;
use super::error::{Error, Result};
use super::help::Flag;
use crate::flags::Parsed;

pub(crate) const SERVICES_USAGE: &str = "
Usage: muster services <subcommand> [options] [args]

  This command has subcommands for interacting with services. The subcommands
  default to working with services registered with the local agent.

  To register a simple service:

      $ muster services register -name=web

  To deregister that service:

      $ muster services deregister -id=web

  For more examples, ask for subcommand help or view the documentation.
";

pub(crate) const REGISTER_USAGE: &str = "
Usage: muster services register [options] [FILE...]

  Register one or more services using the local agent API. Services can
  be registered from standard configuration files (HCL or JSON) or
  using flags. The service is registered and the command returns. The caller
  must remember to call \"muster services deregister\" or a similar API to
  deregister the service when complete.

      $ muster services register web.json
";

pub(crate) const REGISTER_FLAGS: &[Flag] = &[
    Flag::value(
        "address",
        "string",
        "Address of the service to register for arg-based registration.",
    ),
    Flag::value(
        "id",
        "string",
        "ID of the service to register for arg-based registration. If this isn't set, it \
         will default to the -name value.",
    ),
    Flag::value("kind", "string", "The services 'kind'"),
    Flag::multi(
        "meta",
        "key=value",
        "Metadata to set on the service, formatted as key=value. This flag may be specified \
         multiple times to set multiple meta fields.",
    ),
    Flag::value(
        "name",
        "string",
        "Name of the service to register for arg-based registration.",
    ),
    Flag::value(
        "port",
        "int",
        "Port of the service to register for arg-based registration.",
    ),
    Flag::multi(
        "tag",
        "value",
        "Tag to add to the service. This flag can be specified multiple times to set \
         multiple tags.",
    ),
    Flag::multi(
        "tagged-address",
        "key=value",
        "Tagged address to set on the service, formatted as key=value. This flag may be \
         specified multiple times to set multiple addresses.",
    ),
];

pub(crate) const DEREGISTER_USAGE: &str = "
Usage: muster services deregister [options] [FILE...]

  Deregister one or more services that were previously registered with
  the local agent.

      $ muster services deregister web.json db.json

  The -id flag may be used to deregister a single service by ID:

      $ muster services deregister -id=web

  Services are deregistered from the local agent catalog. This command must
  be run against the same agent where the service was registered.
";

pub(crate) const DEREGISTER_FLAGS: &[Flag] = &[Flag::value(
    "id",
    "string",
    "ID to delete. This must not be set if arguments are given.",
)];

/// A definition's field, whatever the case of its name (`id`, `ID`, `Id`).
fn field<'a>(def: &'a Value, name: &str) -> Option<&'a str> {
    def.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// The service definitions in the files `paths`: each file's `service` and `services`
/// entries, or the file itself when it has neither.
fn services_from_files(paths: &[String]) -> Result<Vec<Value>> {
    let mut defs = Vec::new();
    for path in paths {
        let v = crate::config::read_file(std::path::Path::new(path))
            .map_err(|e| Error::from(e).context("Error"))?;
        let one = v.get("service").filter(|s| !s.is_null());
        let many = v.get("services").filter(|s| !s.is_null());
        match (one, many) {
            (None, None) => defs.push(v.clone()),
            (one, many) => {
                for s in one.into_iter().chain(many) {
                    match s {
                        Value::Array(list) => defs.extend(list.iter().cloned()),
                        s => defs.push(s.clone()),
                    }
                }
            }
        }
    }
    Ok(defs)
}

/// `key=value` flag values as a JSON object.
fn key_values(p: &Parsed, flag: &str) -> Result<serde_json::Map<String, Value>> {
    let mut map = serde_json::Map::new();
    for kv in p.all(flag) {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            Error::usage(format!(
                "invalid value {kv:?} for flag -{flag}: Missing \"=\" value in argument: {kv}"
            ))
        })?;
        map.insert(k.into(), v.into());
    }
    Ok(map)
}

/// The one service the flags describe; only the fields given are sent.
fn service_from_flags(p: &Parsed, name: &str) -> Result<Value> {
    let mut svc = serde_json::Map::new();
    svc.insert("Name".into(), name.into());
    svc.insert("ID".into(), p.value("id").unwrap_or(name).into());
    for (flag, key) in [("address", "Address"), ("kind", "Kind")] {
        if let Some(v) = p.value(flag).filter(|v| !v.is_empty()) {
            svc.insert(key.into(), v.into());
        }
    }
    if let Some(port) = p.num::<u16>("port")?.filter(|p| *p != 0) {
        svc.insert("Port".into(), port.into());
    }
    if !p.all("tag").is_empty() {
        svc.insert("Tags".into(), p.all("tag").into());
    }
    let meta = key_values(p, "meta")?;
    if !meta.is_empty() {
        svc.insert("Meta".into(), meta.into());
    }
    let mut tagged = serde_json::Map::new();
    for (k, addr) in key_values(p, "tagged-address")? {
        let addr = addr.as_str().unwrap_or("");
        let parsed = addr
            .rsplit_once(':')
            .and_then(|(h, port)| Some((h.trim_matches(['[', ']']), port.parse::<u16>().ok()?)));
        let Some((host, port)) = parsed else {
            return Err(Error::usage(format!(
                "Invalid Tagged Address: address {addr}: missing port in address"
            )));
        };
        tagged.insert(k, serde_json::json!({"Address": host, "Port": port}));
    }
    if !tagged.is_empty() {
        svc.insert("TaggedAddresses".into(), tagged.into());
    }
    Ok(Value::Object(svc))
}

fn connect(p: &Parsed) -> Result<Client> {
    Client::new(p).map_err(|e| e.context("Error connecting to Consul agent"))
}

/// Registers the services of the definition FILEs, or the one given by `-name` and its flags.
pub(crate) async fn register(p: &Parsed) -> Result<i32> {
    let name = p.value("name").unwrap_or("");
    let defs = match (p.positional.is_empty(), name.is_empty()) {
        (true, true) => {
            return Err(Error::usage(
                "Service registration requires at least one argument or flags.",
            ))
        }
        (false, false) => {
            return Err(Error::usage(
                "Service registration requires arguments or -id, not both.",
            ))
        }
        (true, false) => vec![service_from_flags(p, name)?],
        (false, true) => services_from_files(&p.positional)?,
    };
    let c = connect(p)?;
    for d in defs {
        let name = field(&d, "name").unwrap_or("").to_string();
        c.call(
            reqwest::Method::PUT,
            "/v1/agent/service/register",
            Some(serde_json::to_vec(&d)?),
        )
        .await
        .map_err(|e| e.context(format!("Error registering service {name:?}")))?;
        println!("Registered service: {name}");
    }
    Ok(0)
}

/// Deregisters the services of the definition FILEs (by ID, else by name), or `-id`.
pub(crate) async fn deregister(p: &Parsed) -> Result<i32> {
    let id = p.value("id").unwrap_or("");
    let defs = match (p.positional.is_empty(), id.is_empty()) {
        (true, true) => {
            return Err(Error::usage(
                "Service deregistration requires at least one argument or -id.",
            ))
        }
        (false, false) => {
            return Err(Error::usage(
                "Service deregistration requires arguments or -id, not both.",
            ))
        }
        (true, false) => vec![serde_json::json!({ "ID": id })],
        (false, true) => services_from_files(&p.positional)?,
    };
    let c = connect(p)?;
    for d in defs {
        let Some(id) = field(&d, "id")
            .filter(|i| !i.is_empty())
            .or_else(|| field(&d, "name").filter(|n| !n.is_empty()))
        else {
            continue;
        };
        // Consul's message says "registering" here too; scripts may match it.
        let name = field(&d, "name").unwrap_or("");
        c.call(
            reqwest::Method::PUT,
            &format!("/v1/agent/service/deregister/{id}"),
            None,
        )
        .await
        .map_err(|e| e.context(format!("Error registering service {name:?}")))?;
        println!("Deregistered service: {id}");
    }
    Ok(0)
}
