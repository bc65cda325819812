//! How this agent checks the certificate of a server it connects to, as Consul's tlsutil does:
//! the chain must lead to the configured CA; the name is checked against a fixed name
//! (`server.<dc>.<domain>` for the server RPC port, `CONSUL_TLS_SERVER_NAME` for the CLI)
//! or against the host dialled, or, without `verify_server_hostname`, not at all. The CLI's
//! `CONSUL_HTTP_SSL_VERIFY=false` skips verification entirely. And how a listener with
//! `verify_incoming` checks a client's certificate. Both verifiers take a new CA on reload.

use std::sync::{Arc, RwLock};

use muster_server::sync::{read, write};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};

/// The handshake-signature methods both verifier traits have, checked with `self.provider`'s
/// algorithms whatever the chain's verdict.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            let algorithms = &self.provider.signature_verification_algorithms;
            verify_tls12_signature(message, cert, dss, algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            let algorithms = &self.provider.signature_verification_algorithms;
            verify_tls13_signature(message, cert, dss, algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Which name a server's certificate must carry.
#[derive(Debug, Clone)]
pub(crate) enum NameCheck {
    /// The name of the host dialled (HTTPS clients).
    Dialled,
    /// This name, whatever was dialled (`server.<dc>.<domain>`, `CONSUL_TLS_SERVER_NAME`).
    Fixed(ServerName<'static>),
    /// Any name: only the chain is checked (Consul without `verify_server_hostname`).
    None,
}

/// A server-certificate verifier: webpki's chain check, with the name check chosen above.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    /// `None` accepts any certificate.
    inner: RwLock<Option<Arc<WebPkiServerVerifier>>>,
    names: NameCheck,
    provider: Arc<CryptoProvider>,
}

impl ServerVerifier {
    /// Verifies the chain against `roots` and the name per `names`.
    pub(crate) fn new(
        roots: RootCertStore,
        names: NameCheck,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let inner = webpki_server(roots, &provider)?;
        Ok(ServerVerifier {
            inner: RwLock::new(Some(inner)),
            names,
            provider,
        })
    }

    /// Verifies chains against `roots` from now on.
    pub(crate) fn set_roots(&self, roots: RootCertStore) -> Result<(), String> {
        let inner = webpki_server(roots, &self.provider)?;
        *write(&self.inner) = Some(inner);
        Ok(())
    }

    /// Accepts any certificate (`CONSUL_HTTP_SSL_VERIFY=false`); signatures are still checked.
    pub(crate) fn insecure(provider: Arc<CryptoProvider>) -> Self {
        ServerVerifier {
            inner: RwLock::new(None),
            names: NameCheck::None,
            provider,
        }
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Some(inner) = read(&self.inner).clone() else {
            return Ok(ServerCertVerified::assertion());
        };
        let name = match &self.names {
            NameCheck::Fixed(n) => n,
            NameCheck::Dialled | NameCheck::None => server_name,
        };
        match inner.verify_server_cert(end_entity, intermediates, name, ocsp_response, now) {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if matches!(self.names, NameCheck::None) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    signature_checks!();
}

fn webpki_server(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot use the CA certificates: {e}"))
}

fn webpki_client(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot use the CA certificates: {e}"))
}

/// A listener's check of client certificates (`verify_incoming`): one is required, and its
/// chain must lead to the CA. No CA names are hinted to clients, so that the CA can change.
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    inner: RwLock<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ClientVerifier {
    pub(crate) fn new(roots: RootCertStore, provider: Arc<CryptoProvider>) -> Result<Self, String> {
        Ok(ClientVerifier {
            inner: RwLock::new(webpki_client(roots, &provider)?),
            provider,
        })
    }

    /// Verifies chains against `roots` from now on.
    pub(crate) fn set_roots(&self, roots: RootCertStore) -> Result<(), String> {
        let inner = webpki_client(roots, &self.provider)?;
        *write(&self.inner) = inner;
        Ok(())
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let inner = read(&self.inner).clone();
        inner.verify_client_cert(end_entity, intermediates, now)
    }

    signature_checks!();
}
