//! A `jwt` auth method's remote keys: a JWKS URL (`JWKSURL`, `JWKSCACert`), or the key set an
//! OIDC provider's discovery document names (`OIDCDiscoveryURL`, `OIDCDiscoveryCACert`),
//! fetched with reqwest (rustls), cached, and fetched again when a token names a key ID the
//! cache lacks, at most once per [`JWKS_REFETCH_MIN`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use serde_json::Value;

/// The least time between two JWKS fetches that a token's unknown key ID triggers.
const JWKS_REFETCH_MIN: Duration = Duration::from_millis(500);
/// How long a JWKS fetch may take.
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Debian and its kin keep the system's CA bundle, used without `JWKSCACert`.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Where the key set is.
pub(super) enum Source {
    /// At this URL.
    Jwks(String),
    /// Named by the discovery document of this issuer (`jwks_uri`).
    Discovery(String),
}

/// A key set's source and the keys last fetched from it.
pub(super) struct Jwks {
    source: Source,
    client: reqwest::Client,
    cache: Mutex<JwksCache>,
    /// Held while fetching, so tokens arriving together cause one fetch.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct JwksCache {
    /// Each key with its `kid`, if it has one.
    keys: Arc<Vec<(Option<String>, Arc<DecodingKey>)>>,
    fetched: Option<Instant>,
    /// The issuer a discovery document confirmed.
    issuer: Option<String>,
}

impl Jwks {
    /// The key set at `source`, trusting the CAs of `ca_pem` (the config key `ca_key`), else
    /// the system's.
    pub(super) fn new(source: Source, ca_pem: &str, ca_key: &str) -> Result<Jwks, String> {
        let mut b = reqwest::Client::builder().timeout(JWKS_TIMEOUT);
        let bundle = if ca_pem.is_empty() {
            std::fs::read(SYSTEM_CA_BUNDLE).unwrap_or_default()
        } else {
            ca_pem.as_bytes().to_vec()
        };
        if !bundle.is_empty() {
            let certs = reqwest::Certificate::from_pem_bundle(&bundle);
            match certs {
                Ok(certs) => {
                    for c in certs {
                        b = b.add_root_certificate(c);
                    }
                }
                Err(_) if ca_pem.is_empty() => {}
                Err(_) => {
                    return Err(format!(
                        "error checking {ca_key}: could not parse CA PEM value successfully"
                    ))
                }
            }
        }
        let client = b
            .build()
            .map_err(|e| format!("error checking {ca_key}: {e}"))?;
        Ok(Jwks {
            source,
            client,
            cache: Mutex::default(),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Fetches the key set and replaces the cached keys.
    pub(super) async fn fetch(&self) -> Result<(), String> {
        let _one = self.fetching.lock().await;
        self.fetch_now().await
    }

    /// Whether the keys come through OIDC discovery.
    pub(super) fn is_discovery(&self) -> bool {
        matches!(self.source, Source::Discovery(_))
    }

    /// The issuer the discovery document confirmed, once fetched.
    pub(super) fn issuer(&self) -> Option<String> {
        crate::sync::lock(&self.cache).issuer.clone()
    }

    async fn get_json(&self, url: &str) -> Result<Value, String> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        // The body stays out of the error: it reaches whoever attempted the login.
        if !status.is_success() {
            return Err(format!("Get {url:?}: {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("failed to decode {url}: {e}"))
    }

    /// The key set's URL: the configured one, or the discovery document's `jwks_uri` (whose
    /// `issuer` must be the configured URL, as go-oidc checks).
    async fn keys_url(&self) -> Result<String, String> {
        let base = match &self.source {
            Source::Jwks(url) => return Ok(url.clone()),
            Source::Discovery(base) => base,
        };
        let doc_url = format!(
            "{}/.well-known/openid-configuration",
            base.trim_end_matches('/')
        );
        let doc = self.get_json(&doc_url).await?;
        let issuer = doc["issuer"].as_str().unwrap_or("");
        if issuer != base {
            return Err(format!(
                "oidc: issuer did not match the issuer returned by provider, expected {base:?} \
                 got {issuer:?}"
            ));
        }
        crate::sync::lock(&self.cache).issuer = Some(issuer.to_string());
        doc["jwks_uri"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .ok_or_else(|| "oidc: the discovery document has no jwks_uri".to_string())
    }

    /// Fetches the key set (the caller holds `fetching`); keys of unknown types are skipped.
    async fn fetch_now(&self) -> Result<(), String> {
        crate::sync::lock(&self.cache).fetched = Some(Instant::now());
        let url = self.keys_url().await?;
        let set = self
            .get_json(&url)
            .await
            .map_err(|e| format!("fetching keys oidc: get keys failed: {e}"))?;
        let mut keys = Vec::new();
        for k in set
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()) else {
                continue;
            };
            // Public keys only: a shared secret published in a key set proves nothing.
            if matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
            ) {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(&jwk) {
                keys.push((jwk.common.key_id.clone(), Arc::new(key)));
            }
        }
        crate::sync::lock(&self.cache).keys = Arc::new(keys);
        Ok(())
    }

    /// The cached keys a token with this `kid` may be signed with (all without one).
    fn candidates(&self, kid: Option<&str>) -> Vec<Arc<DecodingKey>> {
        let keys = crate::sync::lock(&self.cache).keys.clone();
        keys.iter()
            .filter(|(k, _)| kid.is_none() || k.as_deref() == kid)
            .map(|(_, key)| key.clone())
            .collect()
    }

    /// The keys to try for `kid`: the cached ones, fetched anew when none match and the last
    /// fetch is older than [`JWKS_REFETCH_MIN`] (a key rotated in at the issuer).
    pub(super) async fn keys_for(
        &self,
        kid: Option<&str>,
    ) -> Result<Vec<Arc<DecodingKey>>, String> {
        let found = self.candidates(kid);
        if !found.is_empty() {
            return Ok(found);
        }
        // Tokens waiting here together cause one fetch: each looks again once it holds the
        // lock, and finds what the one before it fetched.
        let _one = self.fetching.lock().await;
        let found = self.candidates(kid);
        let stale = crate::sync::lock(&self.cache)
            .fetched
            .is_none_or(|t| t.elapsed() >= JWKS_REFETCH_MIN);
        if !found.is_empty() || !stale {
            return Ok(found);
        }
        self.fetch_now().await?;
        Ok(self.candidates(kid))
    }
}
