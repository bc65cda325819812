//! `muster kv get|put|delete`: the KV store through the agent's `/v1/kv`, with Consul's
//! output, messages and exit codes; `export` and `import` are in [`super::kv_transfer`].

use std::io::Write;

use base64::Engine;
use serde_json::Value;

use super::client::{qs, Client};
use super::error::{Error, Result};
use super::help::Flag;
use crate::flags::Parsed;

pub(crate) const KV_USAGE: &str = "
Usage: muster kv <subcommand> [options] [args]

  This command has subcommands for interacting with the key-value store.
  Here are some simple examples, and more detailed examples are available
  in the subcommands or the documentation.

  Create or update the key named \"redis/config/connections\" with the value \"5\":

      $ muster kv put redis/config/connections 5

  Read this value back:

      $ muster kv get redis/config/connections

  Or get detailed key information:

      $ muster kv get -detailed redis/config/connections

  Finally, delete the key:

      $ muster kv delete redis/config/connections

  For more examples, ask for subcommand help or view the documentation.
";

pub(crate) const GET_USAGE: &str = "
Usage: muster kv get [options] [KEY_OR_PREFIX]

  Retrieves the value from the key-value store at the given key name. If no
  key exists with that name, an error is returned. If a key exists with that
  name but has no data, nothing is returned. If the name or prefix is omitted,
  it defaults to \"\" which is the root of the key-value store.

      $ muster kv get foo
      $ muster kv get -detailed foo
      $ muster kv get -recurse foo
      $ muster kv get -keys foo
";

pub(crate) const GET_FLAGS: &[Flag] = &[
    Flag::bool(
        "base64",
        "Base64 encode the value. The default value is false.",
    ),
    Flag::bool(
        "detailed",
        "Provide additional metadata about the key in addition to the value such as the \
         ModifyIndex and any flags that may have been set on the key. The default value is \
         false.",
    ),
    Flag::bool(
        "keys",
        "List keys which start with the given prefix, but not their values. This option is \
         commonly combined with the -separator option. The default value is false.",
    ),
    Flag::bool(
        "recurse",
        "Recursively look at all keys prefixed with the given path. The default value is \
         false.",
    ),
    Flag::value(
        "separator",
        "string",
        "String to use as a separator between keys. The default value is \"/\", but this \
         option is only taken into account when paired with the -keys flag.",
    ),
];

/// `-cas`, as `put` and `delete` take it.
const CAS: Flag = Flag::bool(
    "cas",
    "Perform a Check-And-Set operation. Specifying this value also requires the \
     -modify-index flag to be set. The default value is false.",
);

/// `-modify-index`, as `put` and `delete` take it.
const MODIFY_INDEX: Flag = Flag::value(
    "modify-index",
    "uint",
    "Unsigned integer representing the ModifyIndex of the key. This is used in combination \
     with the -cas flag.",
);

pub(crate) const PUT_USAGE: &str = "
Usage: muster kv put [options] KEY [DATA]

  Writes the data to the given path in the key-value store. The data can be of
  any type. It can be read from a file by prefixing it with \"@\", or from stdin
  with \"-\". If DATA is omitted, an empty key-value pair is created.

      $ muster kv put config/redis/maxconns 5
      $ muster kv put config/program/license @license.lic
      $ echo \"abcd1234\" | muster kv put config/program/license -
      $ muster kv put -cas -modify-index=844 config/redis/maxconns 5
";

pub(crate) const PUT_FLAGS: &[Flag] = &[
    Flag::bool(
        "acquire",
        "Obtain a lock on the key. If the key does not exist, this operation will create \
         the key and obtain the lock. The session must already exist and be specified via \
         the -session flag. The default value is false.",
    ),
    Flag::bool(
        "base64",
        "Treat the data as base 64 encoded. The default value is false.",
    ),
    CAS,
    Flag::value(
        "flags",
        "uint",
        "Unsigned integer value to assign to this key-value pair. The default value is 0 \
         (no flags).",
    ),
    MODIFY_INDEX,
    Flag::bool(
        "release",
        "Forfeit the lock on the key at the given path. This requires the -session flag to \
         be set. The default value is false.",
    ),
    Flag::value(
        "session",
        "string",
        "User-defined identifer for this session as a string. This is commonly used with \
         the -acquire and -release operations.",
    ),
];

pub(crate) const DELETE_USAGE: &str = "
Usage: muster kv delete [options] KEY_OR_PREFIX

  Removes the value from the key-value store at the given path. If no
  key exists at the path, no action is taken.

      $ muster kv delete foo
      $ muster kv delete -recurse foo
";

pub(crate) const DELETE_FLAGS: &[Flag] = &[
    CAS,
    MODIFY_INDEX,
    Flag::bool(
        "recurse",
        "Recursively delete all keys with the path. The default value is false.",
    ),
];

/// The optional KEY argument, without a leading `/` (Consul strips one).
pub(super) fn optional_key(p: &Parsed) -> Result<String> {
    match p.positional.as_slice() {
        [] => Ok(String::new()),
        [k] => Ok(k.strip_prefix('/').unwrap_or(k).to_string()),
        more => Err(Error::usage(format!(
            "Too many arguments (expected 1, got {})",
            more.len()
        ))),
    }
}

/// A DATA argument: `-` reads stdin, `@FILE` reads the file, anything else is the data.
pub(super) fn read_data(arg: &str) -> Result<Vec<u8>> {
    if arg == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
            .map_err(|e| Error::usage(format!("Error! Failed to read stdin: {e}")))?;
        Ok(b)
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read(path)
            .map_err(|e| Error::usage(format!("Error! Failed to read file: open {path}: {e}")))
    } else {
        Ok(arg.as_bytes().to_vec())
    }
}

/// `-modify-index`, 0 when absent.
fn modify_index(p: &Parsed) -> Result<u64> {
    Ok(p.num::<u64>("modify-index")?.unwrap_or(0))
}

/// Decodes the agent's KV reply.
fn decode_reply<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Json {
        what: "decode kv reply",
        source: e,
    })
}

pub(super) fn connect(p: &Parsed) -> Result<Client> {
    Client::new(p).map_err(|e| e.context("Error connecting to Consul agent"))
}

/// A GET under `/v1/kv` answering `None` for 404 (no such key or prefix).
pub(super) async fn kv_read<T: serde::de::DeserializeOwned>(
    c: &Client,
    key: &str,
    query: &str,
) -> Result<Option<T>> {
    let (code, body) = c
        .send(reqwest::Method::GET, &format!("/v1/kv/{key}{query}"), None)
        .await?;
    match code {
        404 => Ok(None),
        200..=299 => decode_reply(&body).map(Some),
        _ => Err(Error::status(code, &body)),
    }
}

/// An entry's value, decoded from base64 (empty when null).
fn entry_value(e: &Value) -> Vec<u8> {
    e["Value"]
        .as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .unwrap_or_default()
}

/// Consul's `kv get -detailed` block for one entry (no newline after the value).
fn detailed(e: &Value, encode: bool) -> Vec<u8> {
    let value = entry_value(e);
    let session = e["Session"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("-");
    let mut out = Vec::new();
    for (k, v) in [
        ("CreateIndex", e["CreateIndex"].to_string()),
        ("Flags", e["Flags"].to_string()),
        ("Key", e["Key"].as_str().unwrap_or("").to_string()),
        ("LockIndex", e["LockIndex"].to_string()),
        ("ModifyIndex", e["ModifyIndex"].to_string()),
        ("Session", session.to_string()),
    ] {
        out.extend_from_slice(format!("{k:<17}{v}\n").as_bytes());
    }
    out.extend_from_slice(format!("{:<17}", "Value").as_bytes());
    if encode {
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(&value)
                .as_bytes(),
        );
    } else {
        out.extend_from_slice(&value);
    }
    out
}

/// `kv get KEY`: one value, or with `-recurse`/`-keys` everything under a prefix.
pub(crate) async fn kv_get(p: &Parsed) -> Result<i32> {
    let key = optional_key(p)?;
    let (recurse, keys) = (p.bool("recurse"), p.bool("keys"));
    if key.is_empty() && !(recurse || keys) {
        return Err(Error::usage("Error! Missing KEY argument"));
    }
    let c = connect(p)?;
    let query = |e: Error| e.context("Error querying Consul agent");
    if keys {
        let sep = p.value("separator").unwrap_or("/").to_string();
        let extra = [("keys", String::new()), ("separator", sep)];
        let list: Option<Vec<String>> = kv_read(&c, &key, &qs(p, &extra)).await.map_err(query)?;
        let mut out = std::io::stdout().lock();
        for k in list.unwrap_or_default() {
            writeln!(out, "{k}")?;
        }
        return Ok(0);
    }
    let extra = if recurse {
        vec![("recurse", String::new())]
    } else {
        Vec::new()
    };
    let list: Option<Vec<Value>> = kv_read(&c, &key, &qs(p, &extra)).await.map_err(query)?;
    let Some(list) = list else {
        if recurse {
            return Ok(0);
        }
        return Err(Error::refused(format!("Error! No key exists at: {key}")));
    };
    let mut out = std::io::stdout().lock();
    for (i, e) in list.iter().enumerate() {
        if p.bool("detailed") {
            out.write_all(&detailed(e, p.bool("base64")))?;
            writeln!(out)?;
            if recurse && i + 1 < list.len() {
                writeln!(out)?;
            }
            continue;
        }
        let value = entry_value(e);
        if recurse {
            write!(out, "{}:", e["Key"].as_str().unwrap_or(""))?;
        }
        if p.bool("base64") {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&value);
            out.write_all(encoded.as_bytes())?;
        } else {
            out.write_all(&value)?;
        }
        writeln!(out)?;
        if !recurse {
            break;
        }
    }
    Ok(0)
}

/// `kv put KEY [DATA|-|@FILE]`: writes a value, optionally as CAS or a lock operation.
pub(crate) async fn kv_put(p: &Parsed) -> Result<i32> {
    let (key, data) = match p.positional.as_slice() {
        [] => return Err(Error::usage("Error! Missing KEY argument")),
        [k] => (k.clone(), Vec::new()),
        [k, d] if d.is_empty() => (k.clone(), Vec::new()),
        [k, d] => (k.clone(), read_data(d)?),
        more => {
            return Err(Error::usage(format!(
                "Error! Too many arguments (expected 1 or 2, got {})",
                more.len()
            )))
        }
    };
    let data = if p.bool("base64") {
        base64::engine::general_purpose::STANDARD
            .decode(&data)
            .map_err(|e| Error::usage(format!("Error! Cannot base 64 decode data: {e}")))?
    } else {
        data
    };
    let session = p.value("session").unwrap_or("");
    let (acquire, release, cas) = (p.bool("acquire"), p.bool("release"), p.bool("cas"));
    if (acquire || release) && session.is_empty() {
        return Err(Error::usage(
            "Error! Missing -session (required with -acquire and -release)",
        ));
    }
    let index = modify_index(p)?;
    if cas && index == 0 {
        return Err(Error::usage("Must specify -modify-index with -cas!"));
    }
    let mut extra = Vec::new();
    if let Some(f) = p.num::<u64>("flags")?.filter(|f| *f != 0) {
        extra.push(("flags", f.to_string()));
    }
    if cas {
        extra.push(("cas", index.to_string()));
    } else if acquire {
        extra.push(("acquire", session.to_string()));
    } else if release {
        extra.push(("release", session.to_string()));
    }
    let path = format!(
        "/v1/kv/{}{}",
        key.strip_prefix('/').unwrap_or(&key),
        qs(p, &extra)
    );
    let written = connect(p)?
        .call(reqwest::Method::PUT, &path, Some(data))
        .await
        .map(|body| body.starts_with(b"true"));
    let (ok, failed, refused) = if cas {
        (
            format!("Success! Data written to: {key}"),
            format!("Error! Did not write to {key}"),
            format!("Error! Did not write to {key}: CAS failed"),
        )
    } else if acquire {
        (
            format!("Success! Lock acquired on: {key}"),
            "Error! Failed writing data".into(),
            "Error! Did not acquire lock".into(),
        )
    } else if release {
        (
            format!("Success! Lock released on: {key}"),
            "Error! Failed writing data".into(),
            "Error! Did not release lock".into(),
        )
    } else {
        (
            format!("Success! Data written to: {key}"),
            "Error! Failed writing data".into(),
            String::new(),
        )
    };
    match written {
        Err(e) => Err(e.context(failed)),
        // A plain write's answer is not a condition's verdict: Consul ignores it.
        Ok(false) if cas || acquire || release => Err(Error::refused(refused)),
        Ok(_) => {
            println!("{ok}");
            Ok(0)
        }
    }
}

/// `kv delete KEY`: deletes a key, or with `-recurse` a prefix.
pub(crate) async fn kv_delete(p: &Parsed) -> Result<i32> {
    let key = optional_key(p)?;
    let (recurse, cas) = (p.bool("recurse"), p.bool("cas"));
    if key.is_empty() && !recurse {
        return Err(Error::usage("Error! Missing KEY argument"));
    }
    let index = modify_index(p)?;
    if cas && index == 0 {
        return Err(Error::usage(
            "Cannot delete a key that does not exist. Provide a -modify-index greater than \
             than 0.",
        ));
    }
    if index != 0 && !cas {
        return Err(Error::usage("Cannot specify -modify-index without -cas!"));
    }
    if recurse && cas {
        return Err(Error::usage("Cannot specify both -cas and -recurse!"));
    }
    let mut extra = Vec::new();
    if recurse {
        extra.push(("recurse", String::new()));
    }
    if cas {
        extra.push(("cas", index.to_string()));
    }
    let deleted = connect(p)?
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/kv/{key}{}", qs(p, &extra)),
            None,
        )
        .await;
    match deleted {
        Err(e) if recurse => Err(e.context(format!("Error! Did not delete prefix {key}"))),
        Err(e) if cas => Err(e.context(format!("Error! Did not delete key {key}"))),
        Err(e) => Err(e.context(format!("Error deleting key {key}"))),
        Ok(_) if recurse => {
            println!("Success! Deleted keys with prefix: {key}");
            Ok(0)
        }
        Ok(body) if cas && !body.starts_with(b"true") => Err(Error::refused(format!(
            "Error! Did not delete key {key}: CAS failed"
        ))),
        Ok(_) => {
            println!("Success! Deleted key: {key}");
            Ok(0)
        }
    }
}
