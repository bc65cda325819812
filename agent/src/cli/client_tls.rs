//! The TLS side of the commands' HTTP client, as Consul's API client reads it: the CA from
//! `-ca-file`/`CONSUL_CACERT` or `-ca-path`/`CONSUL_CAPATH` (else the system's bundle), a
//! client certificate from `-client-cert`/`CONSUL_CLIENT_CERT` and `-client-key`/
//! `CONSUL_CLIENT_KEY`, the name to expect from `-tls-server-name`/`CONSUL_TLS_SERVER_NAME`
//! (else the host dialled), and `CONSUL_HTTP_SSL_VERIFY=false` to skip verification.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::error::{Error, Result};
use crate::config::{TlsFile, TlsSettings};
use crate::flags::Parsed;
use crate::tls::verify::{NameCheck, ServerVerifier};
use crate::tls::{pem, provider};

/// Where Debian and its kin keep the system's CA bundle, used when no CA is given.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An environment variable, unset when empty (as Go's `os.Getenv` checks read it).
pub(super) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Go's `strconv.ParseBool` truths and falsehoods.
pub(super) fn env_bool(name: &str) -> Option<bool> {
    match env(name)?.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The flag's value, else the environment variable's, as a file setting named after it.
fn file(p: &Parsed, flag: &str, var: &str) -> Option<TlsFile> {
    let (path, origin) = match p.value(flag).filter(|v| !v.is_empty()) {
        Some(v) => (v.to_string(), format!("-{flag}")),
        None => (env(var)?, var.to_string()),
    };
    Some(TlsFile {
        path: PathBuf::from(path),
        origin,
    })
}

fn connect_error(e: crate::Error) -> Error {
    Error::Connect(e.to_string())
}

/// The rustls client config the flags and environment describe.
pub(super) fn client_config(p: &Parsed) -> Result<ClientConfig> {
    let provider = provider();
    let verify = env_bool("CONSUL_HTTP_SSL_VERIFY").unwrap_or(true);
    let verifier = if verify {
        let mut s = TlsSettings {
            ca_file: file(p, "ca-file", "CONSUL_CACERT"),
            ca_path: file(p, "ca-path", "CONSUL_CAPATH"),
            ..TlsSettings::default()
        };
        if !s.has_ca() && std::path::Path::new(SYSTEM_CA_BUNDLE).exists() {
            s.ca_file = Some(TlsFile {
                path: SYSTEM_CA_BUNDLE.into(),
                origin: "the system CA bundle".into(),
            });
        }
        let names = match p
            .value("tls-server-name")
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .or_else(|| env("CONSUL_TLS_SERVER_NAME"))
        {
            Some(n) => NameCheck::Fixed(
                ServerName::try_from(n.clone())
                    .map_err(|e| Error::Connect(format!("invalid TLS server name {n:?}: {e}")))?,
            ),
            None => NameCheck::Dialled,
        };
        let roots = pem::roots(&s).map_err(connect_error)?;
        ServerVerifier::new(roots, names, provider.clone()).map_err(Error::Connect)?
    } else {
        ServerVerifier::insecure(provider.clone())
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Connect(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let cert = file(p, "client-cert", "CONSUL_CLIENT_CERT");
    let key = file(p, "client-key", "CONSUL_CLIENT_KEY");
    let mut config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = pem::certs(&cert).map_err(connect_error)?;
            let key = pem::key(&key).map_err(connect_error)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| Error::Connect(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(Error::Connect(
                "a client certificate needs both -client-cert and -client-key \
                 (CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY)"
                    .into(),
            ))
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
