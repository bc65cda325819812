//! Auth methods of type `jwt` (Consul's `ssoauth` over `internal/go-sso/oidcauth`): the
//! method's `Config` read and checked as Consul checks it ([`JwtConfig`]), and a bearer token
//! verified against static PEM keys or a JWKS URL with its claims checked ([`JwtValidator`]).
//! Validators are kept per method until the method changes ([`Validators`]), so a JWKS
//! (`jwks.rs`) is fetched once and again only when a token names a key ID it does not hold.
//!
//! Signatures are checked by `jsonwebtoken` (ring); the time, issuer and audience checks are
//! Consul's own, with its defaults and its words. With `OIDCDiscoveryURL` they are go-oidc's,
//! as Consul's are there: the provider's issuer, `exp` required, 5 minutes of skew on `nbf`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::jwks::{Jwks, Source};
use super::now_unix_ms;
use crate::go_duration;
use crate::model::AclAuthMethod;

/// The `Config` keys of a `jwt` method (`ssoauth.Config`).
const KEYS: &[&str] = &[
    "JWTSupportedAlgs",
    "BoundAudiences",
    "ClaimMappings",
    "ListClaimMappings",
    "OIDCDiscoveryURL",
    "OIDCDiscoveryCACert",
    "JWKSURL",
    "JWKSCACert",
    "JWTValidationPubKeys",
    "BoundIssuer",
    "ExpirationLeeway",
    "NotBeforeLeeway",
    "ClockSkewLeeway",
];
/// Keys of the `oidc` type, refused on a `jwt` method with Consul's words.
const OIDC_ONLY: &[&str] = &[
    "OIDCClientID",
    "OIDCClientSecret",
    "OIDCScopes",
    "OIDCACRValues",
    "AllowedRedirectURIs",
    "VerboseOIDCLogging",
];

/// Where a method's signing keys come from.
enum Keys {
    Static(Vec<DecodingKey>),
    Jwks(Jwks),
}

/// A `jwt` method's configuration, checked.
pub struct JwtConfig {
    /// `JWTSupportedAlgs`; empty: any algorithm the key fits (Consul does not apply the list
    /// to static keys or a JWKS either).
    algorithms: Vec<Algorithm>,
    bound_audiences: Vec<String>,
    bound_issuer: String,
    /// Claim (a name, or a JSON pointer starting with `/`) to the `value.<name>` it fills.
    pub claim_mappings: BTreeMap<String, String>,
    /// Claim to the `list.<name>` it fills.
    pub list_claim_mappings: BTreeMap<String, String>,
    /// Seconds added to a token's issue or not-before time when it has no `exp`.
    expiration_leeway: i64,
    /// Seconds taken from a token's `exp` when it has neither `nbf` nor `iat`.
    not_before_leeway: i64,
    /// Seconds of clock skew allowed on every time check.
    clock_skew_leeway: i64,
}

/// A Go `time.Duration` from JSON: nanoseconds as a number, or a duration string; negative
/// allowed (a leeway of -1 turns it off).
fn duration_ns(v: &Value, key: &str) -> Result<i64, String> {
    let bad = || format!("error decoding config: '{key}' expected a duration, got {v}");
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(bad),
        Value::String(s) => {
            let (neg, abs) = match s.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, s.as_str()),
            };
            let d = go_duration(abs).ok_or_else(bad)?;
            let ns = i64::try_from(d.as_nanos()).map_err(|_| bad())?;
            Ok(if neg { -ns } else { ns })
        }
        _ => Err(bad()),
    }
}

/// A leeway in whole seconds: negative turns it off, zero is `default`.
fn leeway(ns: i64, default: i64) -> i64 {
    match ns {
        n if n < 0 => 0,
        0 => default,
        n => n / 1_000_000_000,
    }
}

fn strings(v: Option<&Value>, key: &str) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!(
                    "error decoding config: '{key}' has a non-string element {other}"
                )),
            })
            .collect(),
        // mapstructure's weak typing: one string is a list of one.
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(other) => Err(format!(
            "error decoding config: '{key}' expected a list, got {other}"
        )),
    }
}

fn string(v: Option<&Value>, key: &str) -> Result<String, String> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "error decoding config: '{key}' expected a string, got {other}"
        )),
    }
}

/// A mapping of claims to names, each name used once (Consul's check).
fn mappings(v: Option<&Value>, key: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(out);
    };
    let Some(m) = v.as_object() else {
        return Err(format!(
            "error decoding config: '{key}' expected a map, got {v}"
        ));
    };
    for (claim, name) in m {
        let Some(name) = name.as_str() else {
            return Err(format!(
                "error decoding config: '{key}[{claim}]' expected a string"
            ));
        };
        if out.values().any(|n| n == name) {
            return Err(format!("{key} contains multiple mappings for key {name:?}"));
        }
        out.insert(claim.clone(), name.to_string());
    }
    Ok(out)
}

/// An algorithm Consul accepts in `JWTSupportedAlgs` and `jsonwebtoken` can verify.
fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A PEM public key of any kind Consul reads (RSA, ECDSA, Ed25519).
fn public_key(pem: &str) -> Option<DecodingKey> {
    let b = pem.as_bytes();
    DecodingKey::from_rsa_pem(b)
        .or_else(|_| DecodingKey::from_ec_pem(b))
        .or_else(|_| DecodingKey::from_ed_pem(b))
        .ok()
}

/// A method's `Config` checked as Consul's `oidcauth.Config.Validate` checks a `jwt` one, and
/// where its keys come from. A JWKS URL is not fetched here: [`JwtValidator::check_jwks`].
fn parse(config: &Value) -> Result<(JwtConfig, Keys), String> {
    let empty = serde_json::Map::new();
    let m = match config {
        Value::Object(m) => m,
        Value::Null => &empty,
        other => {
            return Err(format!(
                "error decoding config: expected a map, got {other}"
            ))
        }
    };
    let field = |k: &str| m.get(k);
    for k in OIDC_ONLY {
        let set = match field(k) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(_) => true,
        };
        if set {
            return Err(format!("'{k}' must not be set for type \"jwt\""));
        }
    }
    let unknown: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !KEYS.contains(k) && !OIDC_ONLY.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "error decoding config: '' has invalid keys: {}",
            unknown.join(", ")
        ));
    }
    let pub_keys = strings(field("JWTValidationPubKeys"), "JWTValidationPubKeys")?;
    let jwks_url = string(field("JWKSURL"), "JWKSURL")?;
    let jwks_ca = string(field("JWKSCACert"), "JWKSCACert")?;
    let discovery = string(field("OIDCDiscoveryURL"), "OIDCDiscoveryURL")?;
    let count = [
        !pub_keys.is_empty(),
        !jwks_url.is_empty(),
        !discovery.is_empty(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if count != 1 {
        return Err(
            "exactly one of 'JWTValidationPubKeys', 'JWKSURL', or 'OIDCDiscoveryURL' \
                    must be set for type \"jwt\""
                .into(),
        );
    }
    if jwks_url.is_empty() && !jwks_ca.is_empty() {
        return Err("'JWKSCACert' should not be set unless 'JWKSURL' is set".into());
    }
    let oidc_ca = string(field("OIDCDiscoveryCACert"), "OIDCDiscoveryCACert")?;
    if discovery.is_empty() && !oidc_ca.is_empty() {
        return Err(
            "'OIDCDiscoveryCACert' should not be set unless 'OIDCDiscoveryURL' is set".into(),
        );
    }
    let keys = if !discovery.is_empty() {
        let source = Source::Discovery(discovery);
        Keys::Jwks(Jwks::new(source, &oidc_ca, "OIDCDiscoveryCACert")?)
    } else if jwks_url.is_empty() {
        let mut keys = Vec::new();
        for (i, pem) in pub_keys.iter().enumerate() {
            keys.push(public_key(pem).ok_or_else(|| {
                format!(
                    "error parsing public key JWTValidationPubKeys[{i}]: data does not contain \
                     any valid RSA, ECDSA, or ED25519 public keys"
                )
            })?);
        }
        Keys::Static(keys)
    } else {
        Keys::Jwks(Jwks::new(Source::Jwks(jwks_url), &jwks_ca, "JWKSCACert")?)
    };
    let mut algorithms = Vec::new();
    for a in strings(field("JWTSupportedAlgs"), "JWTSupportedAlgs")? {
        algorithms.push(algorithm(&a).ok_or_else(|| format!("Invalid supported algorithm: {a}"))?);
    }
    let ns = |k: &str| duration_ns(field(k).unwrap_or(&Value::Null), k);
    let cfg = JwtConfig {
        algorithms,
        bound_audiences: strings(field("BoundAudiences"), "BoundAudiences")?,
        bound_issuer: string(field("BoundIssuer"), "BoundIssuer")?,
        claim_mappings: mappings(field("ClaimMappings"), "ClaimMappings")?,
        list_claim_mappings: mappings(field("ListClaimMappings"), "ListClaimMappings")?,
        expiration_leeway: leeway(ns("ExpirationLeeway")?, 150),
        not_before_leeway: leeway(ns("NotBeforeLeeway")?, 150),
        clock_skew_leeway: leeway(ns("ClockSkewLeeway")?, 60),
    };
    Ok((cfg, keys))
}

/// Verifies bearer tokens for one `jwt` method.
pub struct JwtValidator {
    pub config: JwtConfig,
    keys: Keys,
}

/// go-jose's claim errors, as Consul reports them.
const ERR_ISSUER: &str = "validation failed, invalid issuer claim (iss)";
const ERR_NOT_YET: &str = "validation failed, token not valid yet (nbf)";
const ERR_EXPIRED: &str = "validation failed, token is expired (exp)";
const ERR_FUTURE: &str = "validation failed, token issued in the future (iat)";

/// A numeric date claim in whole seconds; absent (or not a number) is 0, as go-jose reads it.
fn date(claims: &Value, name: &str) -> i64 {
    claims
        .get(name)
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
        .unwrap_or(0)
}

/// The `aud` claim: one audience or a list.
fn audiences(claims: &Value) -> Vec<&str> {
    match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// go-oidc's claim checks at `now` (Unix seconds), in its words.
fn oidc_claims(claims: &Value, issuer: &str, now: i64) -> Result<(), String> {
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if iss != issuer {
        return Err(format!(
            "oidc: id token issued by a different provider, expected {issuer:?} got {iss:?}"
        ));
    }
    let time = |secs: i64| super::builtin::rfc3339(u64::try_from(secs).unwrap_or(0) * 1000);
    let exp = date(claims, "exp");
    if exp < now {
        return Err(format!(
            "oidc: token is expired (Token Expiry: {})",
            time(exp)
        ));
    }
    let nbf = date(claims, "nbf");
    if nbf != 0 && now + 300 < nbf {
        return Err(format!(
            "oidc: current time {} before the nbf (not before) time: {}",
            time(now),
            time(nbf)
        ));
    }
    Ok(())
}

impl JwtValidator {
    /// The validator for a method's `Config`, checked; a JWKS URL is not fetched yet.
    pub fn new(config: &Value) -> Result<JwtValidator, String> {
        let (config, keys) = parse(config)?;
        Ok(JwtValidator { config, keys })
    }

    /// Fetches a JWKS URL (or discovery document and its key set) once, as Consul does when a
    /// method is written, so a wrong URL is refused then rather than at the first login.
    pub async fn check_remote_keys(&self) -> Result<(), String> {
        match &self.keys {
            Keys::Static(_) => Ok(()),
            Keys::Jwks(j) => {
                let key = if j.is_discovery() {
                    "OIDCDiscoveryURL"
                } else {
                    "JWKSURL"
                };
                j.fetch()
                    .await
                    .map_err(|e| format!("error checking {key}: {e}"))
            }
        }
    }

    /// The token's claims, if its signature is good and its claims pass; else the reason, in
    /// Consul's words.
    pub async fn validate(&self, token: &str) -> Result<Value, String> {
        if token.is_empty() {
            return Err("missing jwt".into());
        }
        let claims = match &self.keys {
            Keys::Static(keys) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|e| format!("error parsing token: {e}"))?;
                let keys: Vec<&DecodingKey> = keys.iter().collect();
                self.verify(token, header.alg, &keys).ok_or_else(|| {
                    "no known key successfully validated the token signature".to_string()
                })?
            }
            Keys::Jwks(jwks) if jwks.is_discovery() => {
                return self.validate_oidc(token, jwks).await
            }
            Keys::Jwks(jwks) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|e| format!("error verifying token: {e}"))?;
                let keys = jwks
                    .keys_for(header.kid.as_deref())
                    .await
                    .map_err(|e| format!("error verifying token: {e}"))?;
                let keys: Vec<&DecodingKey> = keys.iter().map(|k| &**k).collect();
                self.verify(token, header.alg, &keys).ok_or_else(|| {
                    "error verifying token: failed to verify id token signature".to_string()
                })?
            }
        };
        self.check_claims(&claims, (now_unix_ms() / 1000) as i64)
            .map_err(|e| format!("error validating claims: {e}"))?;
        Ok(claims)
    }

    /// As go-oidc verifies a token for Consul with `OIDCDiscoveryURL`: an algorithm of
    /// `JWTSupportedAlgs` (default RS256), the provider's key and issuer, an `exp` not past,
    /// an `nbf` within 5 minutes; then the bound audiences, if any.
    async fn validate_oidc(&self, token: &str, jwks: &Jwks) -> Result<Value, String> {
        let e = |m: String| format!("error validating signature: {m}");
        let header = jsonwebtoken::decode_header(token)
            .map_err(|x| e(format!("oidc: malformed jwt: {x}")))?;
        let algs = match self.config.algorithms.as_slice() {
            [] => &[Algorithm::RS256][..],
            a => a,
        };
        if !algs.contains(&header.alg) {
            return Err(e(format!(
                "oidc: id token signed with unsupported algorithm, expected {algs:?} got \"{:?}\"",
                header.alg
            )));
        }
        let keys = jwks.keys_for(header.kid.as_deref()).await.map_err(e)?;
        let keys: Vec<&DecodingKey> = keys.iter().map(|k| &**k).collect();
        let claims = self.verify(token, header.alg, &keys).ok_or_else(|| {
            e("failed to verify signature: failed to verify id token signature".into())
        })?;
        let issuer = jwks.issuer().unwrap_or_default();
        oidc_claims(&claims, &issuer, (now_unix_ms() / 1000) as i64).map_err(e)?;
        let bound = &self.config.bound_audiences;
        if !bound.is_empty()
            && !audiences(&claims)
                .iter()
                .any(|a| bound.iter().any(|b| b == a))
        {
            return Err(
                "error validating claims: aud claim does not match any bound audience".into(),
            );
        }
        Ok(claims)
    }

    /// The claims, if one of `keys` verifies the signature with `alg`.
    fn verify(&self, token: &str, alg: Algorithm, keys: &[&DecodingKey]) -> Option<Value> {
        if !self.config.algorithms.is_empty() && !self.config.algorithms.contains(&alg) {
            return None;
        }
        let mut v = Validation::new(alg);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        keys.iter()
            .find_map(|k| jsonwebtoken::decode::<Value>(token, k, &v).ok())
            .map(|d| d.claims)
    }

    /// Consul's checks of the time, issuer and audience claims at `now` (Unix seconds).
    fn check_claims(&self, claims: &Value, now: i64) -> Result<(), String> {
        let c = &self.config;
        let iat = date(claims, "iat");
        let mut exp = date(claims, "exp");
        let mut nbf = date(claims, "nbf");
        if iat == 0 && exp == 0 && nbf == 0 {
            return Err("no issue time, notbefore, or expiration time encoded in token".into());
        }
        if exp == 0 {
            exp = iat.max(nbf) + c.expiration_leeway;
        }
        if nbf == 0 {
            nbf = if iat != 0 {
                iat
            } else {
                exp - c.not_before_leeway
            };
        }
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if !c.bound_issuer.is_empty() && iss != c.bound_issuer {
            return Err(ERR_ISSUER.into());
        }
        let skew = c.clock_skew_leeway;
        if now + skew < nbf {
            return Err(ERR_NOT_YET.into());
        }
        if now - skew > exp {
            return Err(ERR_EXPIRED.into());
        }
        if iat != 0 && now + skew < iat {
            return Err(ERR_FUTURE.into());
        }
        let aud = audiences(claims);
        if c.bound_audiences.is_empty() {
            if !aud.is_empty() {
                return Err("audience claim found in JWT but no audiences are bound".into());
            }
        } else if !c.bound_audiences.iter().any(|b| aud.contains(&b.as_str())) {
            return Err("aud claim does not match any bound audience".into());
        }
        Ok(())
    }
}

/// The validators of the auth methods logins used, each kept until its method changes.
#[derive(Default)]
pub struct Validators {
    by_name: Mutex<HashMap<String, (u64, Arc<JwtValidator>)>>,
}

impl Validators {
    /// The validator of `method` (type `jwt`), made anew when the method changed.
    pub fn get(&self, method: &AclAuthMethod) -> Result<Arc<JwtValidator>, String> {
        if let Some((at, v)) = crate::sync::lock(&self.by_name).get(&method.name) {
            if *at == method.modify_index {
                return Ok(v.clone());
            }
        }
        let def: Value = serde_json::from_str(&method.definition).unwrap_or_default();
        let v = Arc::new(JwtValidator::new(
            def.get("Config").unwrap_or(&Value::Null),
        )?);
        let mut map = crate::sync::lock(&self.by_name);
        if map.len() > 256 {
            map.clear();
        }
        map.insert(method.name.clone(), (method.modify_index, v.clone()));
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validator(extra: Value) -> JwtValidator {
        // Any PEM key will do: these tests check claims, not signatures.
        let mut cfg = json!({ "JWKSURL": "http://127.0.0.1:1/jwks" });
        for (k, v) in extra.as_object().into_iter().flatten() {
            cfg[k] = v.clone();
        }
        JwtValidator::new(&cfg).expect("valid config")
    }

    #[test]
    fn config_is_checked_as_consul_checks_it() {
        let err = |cfg: Value| JwtValidator::new(&cfg).err().expect("refused");
        assert!(err(json!({})).starts_with("exactly one of"));
        assert!(
            err(json!({"JWKSURL": "x", "JWTValidationPubKeys": ["y"]})).starts_with("exactly one")
        );
        assert_eq!(
            err(json!({"JWTValidationPubKeys": ["nope"]})),
            "error parsing public key JWTValidationPubKeys[0]: data does not contain any valid \
             RSA, ECDSA, or ED25519 public keys"
        );
        assert_eq!(
            err(json!({"JWKSURL": "x", "OIDCClientID": "c"})),
            "'OIDCClientID' must not be set for type \"jwt\""
        );
        assert!(err(json!({"JWKSURL": "x", "Bogus": 1})).contains("invalid keys: Bogus"));
        assert_eq!(
            err(json!({"JWKSURL": "x", "JWTSupportedAlgs": ["HS256"]})),
            "Invalid supported algorithm: HS256"
        );
        assert_eq!(
            err(json!({"JWKSURL": "x", "ClaimMappings": {"a": "n", "b": "n"}})),
            "ClaimMappings contains multiple mappings for key \"n\""
        );
        assert_eq!(
            err(json!({"JWKSURL": "x", "OIDCDiscoveryCACert": "pem"})),
            "'OIDCDiscoveryCACert' should not be set unless 'OIDCDiscoveryURL' is set"
        );
        let now = 1_000_000;
        let ok = json!({"iss": "https://p", "exp": now + 1, "nbf": now + 299});
        assert_eq!(oidc_claims(&ok, "https://p", now), Ok(()));
        let mut c = ok.clone();
        c["nbf"] = json!(now + 301);
        assert!(oidc_claims(&c, "https://p", now).is_err_and(|e| e.contains("before the nbf")));
        c = ok.clone();
        c.as_object_mut().expect("object").remove("exp");
        assert!(oidc_claims(&c, "https://p", now).is_err_and(|e| e.contains("token is expired")));
        assert!(oidc_claims(&ok, "https://q", now).is_err_and(|e| e.contains("different provider")));
        let v = validator(json!({"ExpirationLeeway": "-1s", "ClockSkewLeeway": 2_000_000_000i64}));
        assert_eq!(v.config.expiration_leeway, 0);
        assert_eq!(v.config.clock_skew_leeway, 2);
        assert_eq!(v.config.not_before_leeway, 150);
    }

    #[test]
    fn claims_are_checked_with_consuls_defaults() {
        let now = 1_000_000;
        let v = validator(json!({"BoundIssuer": "iss", "BoundAudiences": ["a", "b"]}));
        let ok = json!({"iss": "iss", "aud": ["x", "b"], "exp": now + 10});
        assert_eq!(v.check_claims(&ok, now), Ok(()));
        let with = |k: &str, val: Value| {
            let mut c = ok.clone();
            c[k] = val;
            v.check_claims(&c, now).err().unwrap_or_default()
        };
        assert_eq!(with("iss", json!("other")), ERR_ISSUER);
        assert_eq!(
            with("aud", json!("c")),
            "aud claim does not match any bound audience"
        );
        assert_eq!(with("aud", json!("a")), "");
        // Within the 60 s clock skew, then past it.
        assert_eq!(with("exp", json!(now - 50)), "");
        assert_eq!(with("exp", json!(now - 61)), ERR_EXPIRED);
        assert_eq!(with("nbf", json!(now + 61)), ERR_NOT_YET);
        // An iat in the future is the not-before time when there is no nbf.
        assert_eq!(with("iat", json!(now + 61)), ERR_NOT_YET);
        let mut c = ok.clone();
        c["nbf"] = json!(now);
        c["iat"] = json!(now + 61);
        assert_eq!(v.check_claims(&c, now).err().as_deref(), Some(ERR_FUTURE));
        // No exp: iat plus the 150 s expiration leeway.
        let mut c = ok.clone();
        c.as_object_mut().expect("object").remove("exp");
        assert!(v.check_claims(&c, now).is_err(), "no time claim at all");
        c["iat"] = json!(now - 200);
        assert_eq!(v.check_claims(&c, now), Ok(()));
        c["iat"] = json!(now - 211);
        assert_eq!(v.check_claims(&c, now).err().as_deref(), Some(ERR_EXPIRED));
        // No audiences bound: a token naming one is refused.
        let open = validator(json!({}));
        let aud = json!({"aud": "x", "exp": now + 10});
        assert!(open.check_claims(&aud, now).is_err());
    }
}
