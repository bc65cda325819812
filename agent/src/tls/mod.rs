//! TLS at run time, through rustls: the configurations of the HTTPS listener and the server
//! RPC port built from the resolved settings, and the certificates they present, which a
//! reload re-reads. A listener's config asks a [`CertStore`] for its certificate at every
//! handshake, so a reload changes what new connections see and leaves established ones be.
//! The CA and the `verify_*` settings are fixed at start.

pub(crate) mod pem;
pub(crate) mod verify;

use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

use crate::config::{Config, TlsSettings};
use crate::{Error, Result};
use verify::{NameCheck, ServerVerifier};

/// The one crypto provider Muster uses (ring), named rather than process-wide.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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
    stores: Vec<(Use, Arc<CertStore>)>,
}

impl AgentTls {
    /// Reads the certificates, keys and CAs the config names. An unreadable or mismatched
    /// file is an error naming the file and the key that named it.
    pub fn build(cfg: &Config) -> Result<AgentTls> {
        let provider = provider();
        let mut tls = AgentTls::default();
        if cfg.tls.https_port >= 0 {
            let s = cfg.tls.https();
            let store = tls.store(&provider, Use::Https, &s)?;
            let store = store.ok_or_else(|| {
                Error::Config("ports.https is set, but no cert_file and key_file are".into())
            })?;
            tls.https = Some(Arc::new(server_config(&provider, &s, store)?));
        }
        let s = cfg.tls.internal_rpc();
        let store = tls.store(&provider, Use::InternalRpc, &s)?;
        let acceptor = match &store {
            Some(store) if cfg.server => {
                Some(Arc::new(server_config(&provider, &s, store.clone())?))
            }
            _ => None,
        };
        let name = format!("server.{}.{}", cfg.datacenter, cfg.domain.trim_matches('.'));
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| Error::Config(format!("server name {name:?} is not a DNS name: {e}")))?;
        let connector = if s.verify_outgoing {
            let names = if s.verify_server_hostname {
                NameCheck::Fixed(server_name.clone())
            } else {
                NameCheck::None
            };
            let verifier = ServerVerifier::new(pem::roots(&s)?, names, provider.clone())
                .map_err(|e| Error::Config(format!("tls.internal_rpc: {e}")))?;
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Config(format!("TLS: {e}")))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier));
            let config = match store {
                Some(store) => builder.with_client_cert_resolver(store),
                None => builder.with_no_client_auth(),
            };
            Some(Arc::new(config))
        } else {
            None
        };
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

    /// A store holding the certificate `s` names, remembered for reloads; `None` without one.
    fn store(
        &mut self,
        provider: &CryptoProvider,
        what: Use,
        s: &TlsSettings,
    ) -> Result<Option<Arc<CertStore>>> {
        let Some((cert, key)) = s.cert_and_key() else {
            return Ok(None);
        };
        let store = Arc::new(CertStore(RwLock::new(pem::certified_key(
            provider, cert, key,
        )?)));
        self.stores.push((what, store.clone()));
        Ok(Some(store))
    }

    /// Re-reads every certificate and key from the files `cfg` names now. Either all are
    /// replaced or, on an error, none.
    pub fn reload(&self, cfg: &Config) -> Result<()> {
        let provider = provider();
        let mut fresh = Vec::new();
        for (what, store) in &self.stores {
            let s = what.settings(cfg);
            let Some((cert, key)) = s.cert_and_key() else {
                return Err(Error::Config(format!(
                    "TLS: the {what:?} certificate cannot be removed by a reload; restart the \
                     agent to serve without it"
                )));
            };
            fresh.push((store, pem::certified_key(&provider, cert, key)?));
        }
        for (store, key) in fresh {
            store.set(key);
        }
        Ok(())
    }
}

/// A listener's config: `store`'s certificate, and with `verify_incoming` a client certificate
/// from the configured CA required.
fn server_config(
    provider: &Arc<CryptoProvider>,
    s: &TlsSettings,
    store: Arc<CertStore>,
) -> Result<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?;
    let builder = if s.verify_incoming {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(pem::roots(s)?), provider.clone())
                .build()
                .map_err(|e| Error::Config(format!("cannot use the CA certificates: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder.with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
