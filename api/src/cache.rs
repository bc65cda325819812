//! Serialized replies of large list endpoints, reused while the data's index is unchanged.
//! Watchers and load balancers poll the same service over and over; at an unchanged index the
//! answer is byte-for-byte the same, so it is encoded once.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

/// Replies smaller than this are cheaper to rebuild than to keep.
const MIN_SIZE: usize = 8 * 1024;
const MAX_ENTRIES: usize = 256;

#[derive(Default)]
pub(crate) struct ReplyCache {
    entries: Mutex<HashMap<String, (u64, Bytes)>>,
}

impl ReplyCache {
    pub(crate) fn get(&self, key: &str, index: u64) -> Option<Bytes> {
        let m = muster_server::sync::lock(&self.entries);
        m.get(key)
            .filter(|(i, _)| *i == index)
            .map(|(_, b)| b.clone())
    }

    pub(crate) fn put(&self, key: String, index: u64, body: Bytes) {
        if body.len() < MIN_SIZE {
            return;
        }
        let mut m = muster_server::sync::lock(&self.entries);
        if m.len() >= MAX_ENTRIES && !m.contains_key(&key) {
            m.clear();
        }
        m.insert(key, (index, body));
    }
}

/// The cache key of a request: its path and the parameters that shape the answer (not the
/// blocking, consistency or token ones).
pub(crate) fn key(path: &str, raw_query: Option<&str>) -> String {
    let mut parts: Vec<&str> = raw_query
        .unwrap_or("")
        .split('&')
        .filter(|p| {
            let name = p.split('=').next().unwrap_or("");
            !matches!(
                name,
                "" | "index" | "wait" | "stale" | "consistent" | "leader" | "dc" | "token"
            )
        })
        .collect();
    parts.sort_unstable();
    format!("{path}?{}", parts.join("&"))
}
