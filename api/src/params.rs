//! Query-string parsing with Consul's conventions: flags without a value (`?recurse`), the
//! consistency mode, `?dc`, `?pretty`, blocking (`?index`, `?wait`) and the list filters
//! (`?tag`, `?node-meta`, `?filter`).

use std::collections::{BTreeMap, HashMap};

use muster_server::model::Consistency;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

#[derive(Debug, Default)]
pub(crate) struct Params {
    map: HashMap<String, Vec<String>>,
}

impl Params {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            map.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Params { map }
    }

    pub(crate) fn has(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }

    /// Every value of a repeatable parameter (`?tag=a&tag=b`).
    pub(crate) fn all(&self, k: &str) -> &[String] {
        self.map.get(k).map(Vec::as_slice).unwrap_or(&[])
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.map.get(k).and_then(|v| v.first()).map(String::as_str)
    }

    pub(crate) fn u64(&self, k: &str) -> ApiResult<Option<u64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::BadRequest(format!("Invalid {k} value {v:?}: not a number"))
            }),
        }
    }

    pub(crate) fn consistency(&self) -> ApiResult<Consistency> {
        match (self.has("stale"), self.has("consistent")) {
            (true, true) => Err(ApiError::BadRequest(
                "Cannot specify ?stale with ?consistent, conflicting semantics.".into(),
            )),
            (true, false) => Ok(Consistency::Stale),
            (false, true) => Ok(Consistency::Consistent),
            (false, false) => Ok(Consistency::Default),
        }
    }

    /// Checks `?dc`: our own datacenter is accepted, any other has no path.
    pub(crate) fn check_dc(&self, own: &str) -> ApiResult<()> {
        match self.get("dc") {
            Some(dc) if !dc.is_empty() && dc != own => {
                Err(ApiError::Unavailable("No path to datacenter".into()))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn pretty(&self) -> bool {
        self.has("pretty")
    }
}

pub use muster_server::go_duration;
use muster_server::MAX_GO_DURATION;

/// A duration in a JSON body, as Consul's decoders read one: a Go duration string, or a number
/// of nanoseconds (so `10` is 10ns, which the minimums that apply to it then raise). A negative
/// number is zero; a number or string past 2^63-1 ns is invalid, as in Go.
pub fn json_duration(v: &Value) -> Option<std::time::Duration> {
    match v {
        Value::String(s) => go_duration(s),
        Value::Number(n) => {
            let ns = n.as_f64()?;
            if ns <= 0.0 {
                Some(std::time::Duration::ZERO)
            } else if ns > MAX_GO_DURATION.as_nanos() as f64 {
                None
            } else {
                Some(std::time::Duration::from_nanos(ns as u64))
            }
        }
        _ => None,
    }
}

/// Consul's blocking-query defaults: 5 minutes, at most 10.
const DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(300);
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

impl Params {
    /// `?index=N&wait=D`: the index to wait past and how long, with Consul's jitter of up to
    /// wait/16 so many watchers do not all return at once.
    pub(crate) fn block(&self) -> ApiResult<Option<(u64, std::time::Duration)>> {
        let Some(index) = self.u64("index")? else {
            return Ok(None);
        };
        let wait = match self.get("wait") {
            None => DEFAULT_WAIT,
            Some(w) => go_duration(w)
                .ok_or_else(|| ApiError::BadRequest(format!("Invalid wait time {w:?}")))?,
        };
        let wait = wait.min(MAX_WAIT);
        let jitter = if wait.is_zero() {
            0.0
        } else {
            rand::random::<f64>() * wait.as_secs_f64() / 16.0
        };
        Ok(Some((
            index,
            wait + std::time::Duration::from_secs_f64(jitter),
        )))
    }
}

impl Params {
    /// `?node-meta=k:v` (repeatable, all must match).
    pub(crate) fn node_meta_ok(&self, meta: &BTreeMap<String, String>) -> bool {
        self.node_meta()
            .iter()
            .all(|(k, v)| meta.get(k).is_some_and(|x| x == v))
    }

    /// `?node-meta=key:value` pairs (repeatable, all must match).
    pub(crate) fn node_meta(&self) -> Vec<(String, String)> {
        self.all("node-meta")
            .iter()
            .map(|kv| {
                let (k, v) = kv.split_once(':').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// `?tag=` (repeatable, all must be present).
    pub(crate) fn tags_ok(&self, tags: &[String]) -> bool {
        self.all("tag").iter().all(|t| tags.contains(t))
    }

    /// Whether the request asks for this cluster's own instances: Consul 1.13's `?peer=`
    /// names a peered cluster, and Muster peers with none, so any peer has nothing.
    pub(crate) fn local(&self) -> bool {
        self.get("peer").is_none_or(str::is_empty)
    }

    /// Applies `?filter=` to already-serialized results.
    pub(crate) fn filtered<T: crate::filter::Filterable>(
        &self,
        items: Vec<T>,
    ) -> ApiResult<Vec<Value>> {
        crate::filter::apply(self.get("filter"), items).map_err(ApiError::BadRequest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_past_292_years_are_invalid() {
        assert_eq!(
            go_duration("1m30s"),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            go_duration("2562047h"),
            Some(std::time::Duration::from_secs(2562047 * 3600))
        );
        assert_eq!(go_duration("1000000000000h"), None);
        assert_eq!(
            go_duration(&format!("{}h", "9".repeat(400))),
            None,
            "no panic on inf"
        );
    }

    #[test]
    fn json_durations_are_strings_or_nanoseconds() {
        use serde_json::json;
        let d = |v: Value| json_duration(&v);
        assert_eq!(d(json!("10s")), Some(std::time::Duration::from_secs(10)));
        assert_eq!(d(json!(10)), Some(std::time::Duration::from_nanos(10)));
        assert_eq!(
            d(json!(1_500_000_000u64)),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(
            d(json!(2.5e9)),
            Some(std::time::Duration::from_millis(2500))
        );
        assert_eq!(d(json!(-5)), Some(std::time::Duration::ZERO));
        assert_eq!(d(json!(1e300)), None);
        assert_eq!(d(json!("soon")), None);
        assert_eq!(d(json!(true)), None);
    }
}
