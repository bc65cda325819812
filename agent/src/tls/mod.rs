//! TLS at run time, through rustls: the configurations of the HTTPS listener and the server
//! RPC port built from the resolved settings, and the certificates they present, which a
//! reload re-reads. A listener's config asks a [`CertStore`] for its certificate at every
//! handshake, and its verifiers hold the CA the same way, so a reload changes what new
//! connections see and leaves established ones be. The `verify_*` settings and whether a
//! listener has TLS at all are fixed at start.

pub(crate) mod pem;
pub(crate) mod verify;

use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

use crate::config::{Config, TlsSettings};
use crate::{Error, Result};
use verify::{ClientVerifier, NameCheck, ServerVerifier};

/// The one crypto provider Muster uses (ring), named rather than process-wide.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The provider for one use's settings: with `tls_cipher_suites`, TLS 1.2 offers only those
/// of them rustls has (TLS 1.3's suites are not configurable, as in Consul). A listed suite
/// rustls lacks (CBC, RC4, 3DES: broken or legacy) is left out with a warning; a list with
/// none it has is an error.
fn provider_for(what: &str, s: &TlsSettings) -> Result<Arc<CryptoProvider>> {
    let mut p = rustls::crypto::ring::default_provider();
    if s.tls_cipher_suites.is_empty() {
        return Ok(Arc::new(p));
    }
    let name = |c: &rustls::SupportedCipherSuite| format!("{:?}", c.suite());
    let all = p.cipher_suites.clone();
    let (tls13, tls12): (Vec<_>, Vec<_>) = all.into_iter().partition(|c| c.tls13().is_some());
    let chosen: Vec<_> = tls12
        .iter()
        .filter(|c| s.tls_cipher_suites.contains(&name(c)))
        .cloned()
        .collect();
    let known: Vec<String> = tls12.iter().map(name).collect();
    let missing: Vec<&String> = s
        .tls_cipher_suites
        .iter()
        .filter(|n| !known.contains(n))
        .collect();
    if chosen.is_empty() {
        return Err(Error::Config(format!(
            "{what}: tls_cipher_suites names none this agent supports; choose from {}",
            known.join(", ")
        )));
    }
    if !missing.is_empty() {
        tracing::warn!(
            ?missing,
            "{what}: tls_cipher_suites lists suites this agent does not offer; using the rest"
        );
    }
    p.cipher_suites = tls13.into_iter().chain(chosen).collect();
    Ok(Arc::new(p))
}

/// The protocol versions for one use: TLS 1.3 only with `tls_min_version = "tls13"`, else
/// 1.2 and 1.3 (rustls speaks nothing older: `tls10`/`tls11` get 1.2, with a warning).
fn versions(what: &str, s: &TlsSettings) -> &'static [&'static rustls::SupportedProtocolVersion] {
    use crate::config::TlsVersion;
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match s.tls_min_version {
        TlsVersion::Tls13 => &TLS13_ONLY,
        v => {
            if v < TlsVersion::Tls12 {
                tracing::warn!("{what}: tls_min_version {v:?} is below TLS 1.2, which is the oldest this agent speaks");
            }
            rustls::DEFAULT_VERSIONS
        }
    }
}

/// The certificate a listener presents (and a dialler, to a peer that asks), replaced on
/// reload.
#[derive(Debug)]
pub(crate) struct CertStore(RwLock<Arc<CertifiedKey>>);

impl CertStore {
    fn get(&self) -> Arc<CertifiedKey> {
        muster_server::sync::read(&self.0).clone()
    }

    fn set(&self, key: Arc<CertifiedKey>) {
        *muster_server::sync::write(&self.0) = key;
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Which listener a certificate store serves.
#[derive(Debug, Clone, Copy)]
enum Use {
    Https,
    InternalRpc,
}

impl Use {
    fn settings(self, cfg: &Config) -> TlsSettings {
        match self {
            Use::Https => cfg.tls.https(),
            Use::InternalRpc => cfg.tls.internal_rpc(),
        }
    }
}

/// The agent's TLS: what the listeners and the RPC client are built with, and what reloads.
#[derive(Debug, Default)]
pub struct AgentTls {
    /// The HTTPS listener's config, when `ports.https` is set.
    pub https: Option<Arc<ServerConfig>>,
    /// The server RPC port's TLS, when a certificate or `verify_outgoing` is configured.
    pub rpc: Option<muster_server::RpcTls>,
    reloads: Vec<Reloadable>,
}

/// What a reload refills for one use: its certificate and the verifiers holding its CA.
#[derive(Debug)]
struct Reloadable {
    what: Use,
    cert: Option<Arc<CertStore>>,
    incoming: Option<Arc<ClientVerifier>>,
    outgoing: Option<Arc<ServerVerifier>>,
}

impl AgentTls {
    /// Reads the certificates, keys and CAs the config names. An unreadable or mismatched
    /// file is an error naming the file and the key that named it.
    pub fn build(cfg: &Config) -> Result<AgentTls> {
        let provider = provider();
        let mut tls = AgentTls::default();
        if cfg.tls.https_port >= 0 {
            let s = cfg.tls.https();
            let store = cert_store(&provider, &s)?.ok_or_else(|| {
                Error::Config("ports.https is set, but no cert_file and key_file are".into())
            })?;
            let (config, incoming) = server_config("tls.https", &s, store.clone())?;
            tls.https = Some(Arc::new(config));
            tls.reloads.push(Reloadable {
                what: Use::Https,
                cert: Some(store),
                incoming,
                outgoing: None,
            });
        }
        let s = cfg.tls.internal_rpc();
        let store = cert_store(&provider, &s)?;
        let (acceptor, incoming) = match &store {
            Some(store) if cfg.server => {
                let (config, incoming) = server_config("tls.internal_rpc", &s, store.clone())?;
                (Some(Arc::new(config)), incoming)
            }
            _ => (None, None),
        };
        let name = format!("server.{}.{}", cfg.datacenter, cfg.domain.trim_matches('.'));
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| Error::Config(format!("server name {name:?} is not a DNS name: {e}")))?;
        let mut outgoing = None;
        let connector = if s.verify_outgoing {
            let names = if s.verify_server_hostname {
                NameCheck::Fixed(server_name.clone())
            } else {
                NameCheck::None
            };
            let verifier = ServerVerifier::new(pem::roots(&s)?, names, provider.clone())
                .map_err(|e| Error::Config(format!("tls.internal_rpc: {e}")))?;
            let verifier = Arc::new(verifier);
            outgoing = Some(verifier.clone());
            let builder =
                ClientConfig::builder_with_provider(provider_for("tls.internal_rpc", &s)?)
                    .with_protocol_versions(versions("tls.internal_rpc", &s))
                    .map_err(|e| Error::Config(format!("TLS: {e}")))?
                    .dangerous()
                    .with_custom_certificate_verifier(verifier);
            let config = match &store {
                Some(store) => builder.with_client_cert_resolver(store.clone()),
                None => builder.with_no_client_auth(),
            };
            Some(Arc::new(config))
        } else {
            None
        };
        tls.reloads.push(Reloadable {
            what: Use::InternalRpc,
            cert: store,
            incoming,
            outgoing,
        });
        if acceptor.is_some() || connector.is_some() {
            tls.rpc = Some(muster_server::RpcTls {
                acceptor,
                require_incoming: s.verify_incoming,
                connector,
                server_name,
            });
        }
        Ok(tls)
    }

    /// Re-reads every certificate, key and CA from the files `cfg` names now. Either all are
    /// replaced or, on an error, none.
    pub fn reload(&self, cfg: &Config) -> Result<()> {
        let provider = provider();
        let mut fresh = Vec::new();
        for r in &self.reloads {
            let s = r.what.settings(cfg);
            let cert = match (&r.cert, s.cert_and_key()) {
                (Some(_), Some((cert, key))) => Some(pem::certified_key(&provider, cert, key)?),
                (None, None) => None,
                _ => {
                    return Err(Error::Config(format!(
                        "TLS: a reload cannot add or remove the {:?} certificate; restart the \
                         agent for that",
                        r.what
                    )))
                }
            };
            let needs_ca = r.incoming.is_some() || r.outgoing.is_some();
            // Checked here, so that installing below cannot fail half-way.
            let roots = match needs_ca {
                true => {
                    let roots = pem::roots(&s)?;
                    if roots.is_empty() {
                        return Err(Error::Config(format!(
                            "TLS: no CA certificate for {:?}",
                            r.what
                        )));
                    }
                    Some(roots)
                }
                false => None,
            };
            fresh.push((r, cert, roots));
        }
        for (r, cert, roots) in fresh {
            if let (Some(store), Some(cert)) = (&r.cert, cert) {
                store.set(cert);
            }
            let Some(roots) = roots else { continue };
            let bad_ca = |e: String| Error::Config(format!("TLS: {e}"));
            if let Some(v) = &r.incoming {
                v.set_roots(roots.clone()).map_err(bad_ca)?;
            }
            if let Some(v) = &r.outgoing {
                v.set_roots(roots).map_err(bad_ca)?;
            }
        }
        Ok(())
    }
}

/// A store holding the certificate `s` names; `None` without one.
fn cert_store(provider: &CryptoProvider, s: &TlsSettings) -> Result<Option<Arc<CertStore>>> {
    let Some((cert, key)) = s.cert_and_key() else {
        return Ok(None);
    };
    let key = pem::certified_key(provider, cert, key)?;
    Ok(Some(Arc::new(CertStore(RwLock::new(key)))))
}

/// A listener's config: `store`'s certificate, and with `verify_incoming` a client certificate
/// from the configured CA required (the verifier is returned too, for reloads).
fn server_config(
    what: &str,
    s: &TlsSettings,
    store: Arc<CertStore>,
) -> Result<(ServerConfig, Option<Arc<ClientVerifier>>)> {
    let provider = provider_for(what, s)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(what, s))
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let (builder, incoming) = if s.verify_incoming {
        let verifier = ClientVerifier::new(pem::roots(s)?, provider.clone())
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        let verifier = Arc::new(verifier);
        (
            builder.with_client_cert_verifier(verifier.clone()),
            Some(verifier),
        )
    } else {
        (builder.with_no_client_auth(), None)
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, incoming))
}
