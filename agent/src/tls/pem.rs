//! Reading PEM files: certificate chains, private keys and CA bundles (`ca_file`, and every
//! file of `ca_path`, as Consul's go-rootcerts reads a directory). Every error names the file
//! and the config key that named it.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::config::{TlsFile, TlsSettings};
use crate::{Error, Result};

/// The error for `file`: its origin, its path and why.
pub(crate) fn file_error(file: &TlsFile, why: impl std::fmt::Display) -> Error {
    Error::Config(format!(
        "{}: cannot load {}: {why}",
        file.origin,
        file.path.display()
    ))
}

fn read(file: &TlsFile) -> Result<Vec<u8>> {
    std::fs::read(&file.path).map_err(|e| file_error(file, e))
}

/// Every certificate in a PEM file; none is an error.
pub(crate) fn certs(file: &TlsFile) -> Result<Vec<CertificateDer<'static>>> {
    certs_in(&read(file)?).map_err(|why| file_error(file, why))
}

fn certs_in(pem: &[u8]) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn key(file: &TlsFile) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(&read(file)?)
        .map_err(|e| file_error(file, format!("no PEM private key in it: {e}")))
}

/// The certificate chain of `cert` with the signing key of `key`, checked to belong together.
pub(crate) fn certified_key(
    provider: &CryptoProvider,
    cert: &TlsFile,
    key_file: &TlsFile,
) -> Result<Arc<CertifiedKey>> {
    let chain = certs(cert)?;
    let key = key(key_file)?;
    let ck = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        file_error(
            key_file,
            format!("not the key of {}: {e}", cert.path.display()),
        )
    })?;
    Ok(Arc::new(ck))
}

/// The CA certificates of `ca_file` and of every file in `ca_path`.
pub(crate) fn roots(s: &TlsSettings) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    let mut add = |file: &TlsFile, certs: Vec<CertificateDer<'static>>| -> Result<()> {
        for c in certs {
            store
                .add(c)
                .map_err(|e| file_error(file, format!("not a CA certificate: {e}")))?;
        }
        Ok(())
    };
    if let Some(f) = &s.ca_file {
        add(f, certs(f)?)?;
    }
    if let Some(dir) = &s.ca_path {
        for path in dir_files(&dir.path).map_err(|e| file_error(dir, e))? {
            let f = TlsFile {
                path,
                origin: dir.origin.clone(),
            };
            add(&f, certs(&f)?)?;
        }
    }
    Ok(store)
}

/// The regular files of `dir`, sorted.
fn dir_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}
