//! TLS settings: Consul's top-level keys (`ca_file`, `ca_path`, `cert_file`, `key_file`,
//! `verify_incoming`, `verify_incoming_rpc`, `verify_incoming_https`, `verify_outgoing`,
//! `verify_server_hostname`), the `tls { defaults {…} internal_rpc {…} https {…} }` block,
//! `ports.https` and `addresses.https`; and how they combine per protocol, as Consul's config
//! builder does: the protocol's own `tls` value, else the top-level key for that protocol
//! (`verify_incoming_rpc`), else `tls.defaults`, else the top-level key for every protocol.

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::Value;

use super::file::{as_bool, as_ip, as_str};
use super::sections::block;
use super::{Config, PortSetting};
use crate::{Error, Result};

/// A file a setting names, with where it was set, so that an unreadable file can be reported
/// by the file and key that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFile {
    pub path: PathBuf,
    /// `config file /etc/muster/tls.json: key "tls.https.cert_file"`.
    pub origin: String,
}

/// One set of TLS settings: a `tls` sub-block, or the top-level keys that stand for one.
#[derive(Debug, Clone, Default)]
pub struct TlsBlock {
    pub ca_file: Option<TlsFile>,
    pub ca_path: Option<TlsFile>,
    pub cert_file: Option<TlsFile>,
    pub key_file: Option<TlsFile>,
    pub verify_incoming: Option<bool>,
    pub verify_outgoing: Option<bool>,
    /// Only meaningful for the server RPC port.
    pub verify_server_hostname: Option<bool>,
    pub tls_min_version: Option<TlsVersion>,
    /// `tls_cipher_suites`: IANA names, for TLS 1.2 (TLS 1.3's are always offered).
    pub tls_cipher_suites: Option<Vec<String>>,
}

/// `tls_min_version`: Consul's names (`tls12`, or `TLSv1_2` in newer files).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    #[default]
    Tls12,
    Tls13,
}

impl TlsVersion {
    fn parse(s: &str) -> Option<TlsVersion> {
        Some(match s {
            "tls10" | "TLSv1_0" => TlsVersion::Tls10,
            "tls11" | "TLSv1_1" => TlsVersion::Tls11,
            "tls12" | "TLSv1_2" => TlsVersion::Tls12,
            "tls13" | "TLSv1_3" => TlsVersion::Tls13,
            _ => return None,
        })
    }
}

/// Everything TLS in the agent's config, as given.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// `ports.https`: -1 (Consul's default) serves no HTTPS.
    pub https_port: PortSetting,
    /// `addresses.https`: where HTTPS binds; the client address otherwise.
    pub https_addr: Option<IpAddr>,
    /// `tls.defaults`, `tls.internal_rpc`, `tls.https`.
    pub defaults: TlsBlock,
    pub internal_rpc: TlsBlock,
    pub https: TlsBlock,
    /// The top-level keys: those for every protocol (`ca_file`, `verify_incoming`, …), and
    /// `verify_incoming_rpc`/`verify_server_hostname` and `verify_incoming_https`.
    pub legacy_defaults: TlsBlock,
    pub legacy_rpc: TlsBlock,
    pub legacy_https: TlsBlock,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            https_port: -1,
            https_addr: None,
            defaults: TlsBlock::default(),
            internal_rpc: TlsBlock::default(),
            https: TlsBlock::default(),
            legacy_defaults: TlsBlock::default(),
            legacy_rpc: TlsBlock::default(),
            legacy_https: TlsBlock::default(),
        }
    }
}

/// One protocol's settings, combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub ca_file: Option<TlsFile>,
    pub ca_path: Option<TlsFile>,
    pub cert_file: Option<TlsFile>,
    pub key_file: Option<TlsFile>,
    pub verify_incoming: bool,
    pub verify_outgoing: bool,
    pub verify_server_hostname: bool,
    pub tls_min_version: TlsVersion,
    /// Empty: rustls's safe defaults.
    pub tls_cipher_suites: Vec<String>,
}

impl TlsSettings {
    /// Whether any CA is configured.
    pub fn has_ca(&self) -> bool {
        self.ca_file.is_some() || self.ca_path.is_some()
    }

    /// The certificate and its key, when both are configured.
    pub fn cert_and_key(&self) -> Option<(&TlsFile, &TlsFile)> {
        Some((self.cert_file.as_ref()?, self.key_file.as_ref()?))
    }
}

impl TlsConfig {
    /// The HTTPS listener's settings.
    pub fn https(&self) -> TlsSettings {
        self.combine(&self.https, &self.legacy_https)
    }

    /// The server RPC port's settings (Raft and forwarded requests, both ways).
    pub fn internal_rpc(&self) -> TlsSettings {
        let mut s = self.combine(&self.internal_rpc, &self.legacy_rpc);
        // As in Consul, checking the server's name implies verifying it.
        s.verify_outgoing |= s.verify_server_hostname;
        s
    }

    fn combine(&self, own: &TlsBlock, legacy: &TlsBlock) -> TlsSettings {
        let order = [own, legacy, &self.defaults, &self.legacy_defaults];
        let file = |f: fn(&TlsBlock) -> &Option<TlsFile>| order.iter().find_map(|b| f(b).clone());
        let flag =
            |f: fn(&TlsBlock) -> Option<bool>| order.iter().find_map(|b| f(b)).unwrap_or(false);
        TlsSettings {
            ca_file: file(|b| &b.ca_file),
            ca_path: file(|b| &b.ca_path),
            cert_file: file(|b| &b.cert_file),
            key_file: file(|b| &b.key_file),
            verify_incoming: flag(|b| b.verify_incoming),
            verify_outgoing: flag(|b| b.verify_outgoing),
            // Only `tls.internal_rpc` and the top-level key set it; `tls.defaults` has none.
            verify_server_hostname: [own, legacy]
                .iter()
                .find_map(|b| b.verify_server_hostname)
                .unwrap_or(false),
            tls_min_version: order
                .iter()
                .find_map(|b| b.tls_min_version)
                .unwrap_or_default(),
            tls_cipher_suites: order
                .iter()
                .find_map(|b| b.tls_cipher_suites.clone())
                .unwrap_or_default(),
        }
    }
}

/// The top-level TLS keys Consul accepts; each sets one value of one block.
pub(super) const TOP_LEVEL_KEYS: &[&str] = &[
    "ca_file",
    "ca_path",
    "cert_file",
    "key_file",
    "verify_incoming",
    "verify_incoming_rpc",
    "verify_incoming_https",
    "verify_outgoing",
    "verify_server_hostname",
    "tls_min_version",
    "tls_cipher_suites",
];

/// Consul's TLS tuning keys that change nothing here (warned about): rustls always prefers
/// the server's order.
const TUNING_KEYS: &[&str] = &["tls_prefer_server_cipher_suites"];

/// Applies one top-level TLS key (one of [`TOP_LEVEL_KEYS`]).
pub(super) fn apply_top_level(cfg: &mut Config, k: &str, v: &Value, file: &str) -> Result<()> {
    let t = &mut cfg.tls;
    let block = match k {
        "verify_incoming_rpc" | "verify_server_hostname" => &mut t.legacy_rpc,
        "verify_incoming_https" => &mut t.legacy_https,
        _ => &mut t.legacy_defaults,
    };
    let key = match k {
        "verify_incoming_rpc" | "verify_incoming_https" => "verify_incoming",
        k => k,
    };
    set(block, key, k, v, file)
}

/// Applies the `tls` block.
pub(super) fn apply_block(
    cfg: &mut Config,
    v: &Value,
    file: &str,
    ignored: &mut Vec<String>,
) -> Result<()> {
    for (section, body) in block(v, file, "tls")? {
        let path = format!("tls.{section}");
        let target = match section.as_str() {
            "defaults" => &mut cfg.tls.defaults,
            "internal_rpc" => &mut cfg.tls.internal_rpc,
            "https" => &mut cfg.tls.https,
            "grpc" => {
                ignored.push(path);
                continue;
            }
            _ => return Err(unknown_key(file, &path)),
        };
        for (k, v) in block(body, file, &path)? {
            let full = format!("{path}.{k}");
            match k.as_str() {
                "verify_server_hostname" if section != "internal_rpc" => {
                    return Err(unknown_key(file, &full))
                }
                "ca_file"
                | "ca_path"
                | "cert_file"
                | "key_file"
                | "verify_incoming"
                | "verify_outgoing"
                | "verify_server_hostname"
                | "tls_min_version"
                | "tls_cipher_suites" => set(target, k, &full, v, file)?,
                k if TUNING_KEYS.contains(&k) || k == "use_auto_cert" => ignored.push(full),
                _ => return Err(unknown_key(file, &full)),
            }
        }
    }
    Ok(())
}

/// Applies the `addresses` block: `https` is Muster's; the other listeners bind to the client
/// address, and their keys are warned about.
pub(super) fn apply_addresses(
    cfg: &mut Config,
    v: &Value,
    file: &str,
    ignored: &mut Vec<String>,
) -> Result<()> {
    for (k, v) in block(v, file, "addresses")? {
        match k.as_str() {
            "https" => {
                cfg.tls.https_addr =
                    Some(as_ip(v).ok_or_else(|| {
                        key_error(file, "addresses.https", "expected an IP address")
                    })?)
            }
            "http" | "dns" | "grpc" | "grpc_tls" => ignored.push(format!("addresses.{k}")),
            _ => return Err(unknown_key(file, &format!("addresses.{k}"))),
        }
    }
    Ok(())
}

/// Whether `k` is one of Consul's top-level TLS tuning keys (warned about, not applied).
pub(super) fn is_tuning_key(k: &str) -> bool {
    TUNING_KEYS.contains(&k)
}

/// Sets `key` of `block` from `v`; `name` is the key as written, for the error.
fn set(block: &mut TlsBlock, key: &str, name: &str, v: &Value, file: &str) -> Result<()> {
    let path = |v: &Value| -> Result<Option<TlsFile>> {
        let p = as_str(v).ok_or_else(|| key_error(file, name, "expected a string"))?;
        Ok((!p.is_empty()).then(|| TlsFile {
            path: p.into(),
            origin: format!("config file {file}: key \"{name}\""),
        }))
    };
    let flag = |v: &Value| {
        as_bool(v)
            .map(Some)
            .ok_or_else(|| key_error(file, name, "expected a boolean"))
    };
    match key {
        "ca_file" => block.ca_file = path(v)?,
        "ca_path" => block.ca_path = path(v)?,
        "cert_file" => block.cert_file = path(v)?,
        "key_file" => block.key_file = path(v)?,
        "verify_incoming" => block.verify_incoming = flag(v)?,
        "verify_outgoing" => block.verify_outgoing = flag(v)?,
        "verify_server_hostname" => block.verify_server_hostname = flag(v)?,
        "tls_min_version" => {
            let s = as_str(v).unwrap_or_default();
            let why = "expected one of tls10, tls11, tls12, tls13";
            block.tls_min_version =
                Some(TlsVersion::parse(s).ok_or_else(|| key_error(file, name, why))?);
        }
        "tls_cipher_suites" => {
            let s = as_str(v).ok_or_else(|| key_error(file, name, "expected a string"))?;
            let suites: Vec<String> = s
                .split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect();
            if let Some(bad) = suites.iter().find(|x| !x.starts_with("TLS_")) {
                let why = format!("{bad:?} is not a cipher suite name (TLS_ECDHE_…)");
                return Err(key_error(file, name, &why));
            }
            block.tls_cipher_suites = Some(suites);
        }
        _ => return Err(unknown_key(file, name)),
    }
    Ok(())
}

/// Consul's rules between the TLS settings, checked once every file is read.
pub(super) fn validate(cfg: &Config) -> Result<()> {
    let t = &cfg.tls;
    let check = |what: &str, s: &TlsSettings, serves: bool| -> Result<()> {
        if s.cert_file.is_some() != s.key_file.is_some() {
            return Err(Error::Config(format!(
                "{what}: cert_file and key_file must be set together"
            )));
        }
        if serves && s.verify_incoming {
            if !s.has_ca() {
                return Err(Error::Config(format!(
                    "{what}: verify_incoming is set, but no ca_file or ca_path is"
                )));
            }
            if s.cert_file.is_none() {
                return Err(Error::Config(format!(
                    "{what}: verify_incoming is set, but no cert_file and key_file are"
                )));
            }
        }
        if s.verify_outgoing && !s.has_ca() {
            return Err(Error::Config(format!(
                "{what}: verify_outgoing is set, but no ca_file or ca_path is"
            )));
        }
        Ok(())
    };
    let https = t.https();
    if t.https_port >= 0 && https.cert_file.is_none() {
        return Err(Error::Config(
            "ports.https is set, but no cert_file and key_file are (tls.https or tls.defaults)"
                .into(),
        ));
    }
    check("tls.https", &https, t.https_port >= 0)?;
    check("tls.internal_rpc", &t.internal_rpc(), cfg.server)
}

fn key_error(file: &str, key: &str, why: &str) -> Error {
    Error::Config(format!("config file {file}: key \"{key}\": {why}"))
}

fn unknown_key(file: &str, key: &str) -> Error {
    Error::Config(format!("config file {file}: unknown key \"{key}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(cfg: &mut Config, json: &str) -> Result<Vec<String>> {
        let v: Value = serde_json::from_str(json).expect("json");
        let mut ignored = Vec::new();
        for (k, v) in v.as_object().expect("object") {
            match k.as_str() {
                "tls" => apply_block(cfg, v, "t.json", &mut ignored)?,
                k => apply_top_level(cfg, k, v, "t.json")?,
            }
        }
        Ok(ignored)
    }

    #[test]
    fn protocol_values_win_over_defaults_and_top_level_keys() {
        let mut cfg = Config::default();
        apply(
            &mut cfg,
            r#"{"ca_file": "old-ca.pem", "cert_file": "old.pem", "key_file": "old-key.pem",
                "verify_incoming": true, "verify_incoming_https": false,
                "verify_server_hostname": true,
                "tls": {"defaults": {"ca_file": "ca.pem"},
                        "https": {"cert_file": "https.pem", "key_file": "https-key.pem"}}}"#,
        )
        .expect("applies");
        let https = cfg.tls.https();
        assert_eq!(https.ca_file.expect("ca").path, PathBuf::from("ca.pem"));
        assert_eq!(
            https.cert_file.expect("cert").path,
            PathBuf::from("https.pem")
        );
        assert!(
            !https.verify_incoming,
            "verify_incoming_https wins over verify_incoming"
        );
        assert!(!https.verify_server_hostname);
        let rpc = cfg.tls.internal_rpc();
        let cert = rpc.cert_file.expect("cert");
        assert_eq!(cert.path, PathBuf::from("old.pem"));
        assert_eq!(cert.origin, "config file t.json: key \"cert_file\"");
        assert!(rpc.verify_incoming);
        assert!(
            rpc.verify_server_hostname && rpc.verify_outgoing,
            "hostname implies outgoing"
        );
    }

    #[test]
    fn bad_keys_and_missing_pairs_are_errors_naming_the_key() {
        let mut cfg = Config::default();
        let e = apply(&mut cfg, r#"{"tls": {"https": {"cert": "x"}}}"#).expect_err("unknown");
        assert!(e.to_string().contains("\"tls.https.cert\""), "{e}");
        let e = apply(&mut cfg, r#"{"verify_incoming": "yes"}"#).expect_err("not a bool");
        assert!(
            e.to_string()
                .contains("key \"verify_incoming\": expected a boolean"),
            "{e}"
        );
        let mut cfg = Config::default();
        cfg.tls.https_port = 8501;
        let e = validate(&cfg).expect_err("no cert");
        assert!(e.to_string().contains("ports.https is set"), "{e}");
        apply(
            &mut cfg,
            r#"{"cert_file": "c.pem", "key_file": "k.pem", "verify_incoming": true}"#,
        )
        .expect("applies");
        let e = validate(&cfg).expect_err("no CA");
        assert!(e
            .to_string()
            .contains("tls.https: verify_incoming is set, but no ca_file"));
    }

    #[test]
    fn min_version_and_suites_combine_and_bad_values_are_named() {
        let mut cfg = Config::default();
        apply(
            &mut cfg,
            r#"{"tls_min_version": "tls12",
                "tls": {"https": {"tls_min_version": "TLSv1_3",
                        "tls_cipher_suites": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"}}}"#,
        )
        .expect("applies");
        let https = cfg.tls.https();
        assert_eq!(https.tls_min_version, TlsVersion::Tls13);
        assert_eq!(
            https.tls_cipher_suites,
            [
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        let rpc = cfg.tls.internal_rpc();
        assert_eq!(rpc.tls_min_version, TlsVersion::Tls12);
        assert!(rpc.tls_cipher_suites.is_empty());
        let e = apply(&mut cfg, r#"{"tls_min_version": "ssl3"}"#).expect_err("bad version");
        assert!(
            e.to_string()
                .contains("key \"tls_min_version\": expected one of tls10, tls11, tls12, tls13"),
            "{e}"
        );
        let e = apply(
            &mut cfg,
            r#"{"tls": {"defaults": {"tls_cipher_suites": "AES128"}}}"#,
        )
        .expect_err("bad suite");
        assert!(
            e.to_string()
                .contains("\"AES128\" is not a cipher suite name"),
            "{e}"
        );
    }
}
