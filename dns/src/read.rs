//! [`Reader`]: the catalog reads DNS answers from, at the consistency `dns_config` asks for,
//! through a cache per kind of read: on a server it saves re-reading what nothing changed
//! since; on a client agent it is the stale fallback while no server answers, and with
//! `use_cache` the answer itself, kept current by a watcher per entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_server::model::{Consistency, Node, Query, QueryResult};
use muster_server::Server;

use crate::instance::Instance;
use crate::name::Names;
use crate::DnsConfig;

/// A watched entry nobody looked up for this long is dropped, and its watcher ends.
const WATCH_IDLE: Duration = Duration::from_secs(600);
/// Longest blocking query a watcher parks on a server.
const WATCH_WAIT: Duration = Duration::from_secs(300);

/// A read result kept between queries.
struct Cached<T> {
    /// The applied index (on a server) at which this was last known current.
    applied: u64,
    /// The index of the data read.
    index: u64,
    /// When a server last confirmed it (client agents).
    fetched: Instant,
    /// When a lookup last used it.
    used: Instant,
    /// A watcher keeps it current (`use_cache`).
    watched: bool,
    value: T,
}

type Cache<T> = Arc<Mutex<HashMap<String, Cached<T>>>>;

/// Reads the catalog for DNS.
pub(crate) struct Reader {
    server: Server,
    /// Healthy instances per service name.
    services: Cache<Arc<Vec<Instance>>>,
    /// Nodes by name.
    nodes: Cache<Option<Node>>,
    /// Every node, for PTR lookups (one entry).
    all_nodes: Cache<Arc<Vec<Node>>>,
    config: DnsConfig,
}

impl Reader {
    pub(crate) fn new(server: Server, config: DnsConfig) -> Self {
        Reader {
            server,
            services: Cache::default(),
            nodes: Cache::default(),
            all_nodes: Cache::default(),
            config,
        }
    }

    /// Every node (for reverse lookups).
    pub(crate) async fn all_nodes(&self) -> muster_server::Result<Arc<Vec<Node>>> {
        self.read(&self.all_nodes, "", Query::Nodes, |r| match r {
            QueryResult::Nodes(n) => Arc::new(n),
            _ => Arc::default(),
        })
        .await
    }

    /// The node named `name`, if there is one.
    pub(crate) async fn node(&self, name: &str) -> muster_server::Result<Option<Node>> {
        let q = Query::Node {
            name: name.to_string(),
        };
        self.read(&self.nodes, name, q, |r| match r {
            QueryResult::Node(n) => n.map(|(n, _)| n),
            _ => None,
        })
        .await
    }

    /// The healthy instances of a service, ready to answer with (their SRV targets built in
    /// `names`).
    pub(crate) async fn instances(
        &self,
        name: &str,
        names: &Names,
    ) -> muster_server::Result<Arc<Vec<Instance>>> {
        let q = Query::ServiceHealth {
            name: name.to_string(),
        };
        let only_passing = self.config.only_passing;
        let build = |r: QueryResult| match r {
            QueryResult::ServiceHealth(all) => {
                Arc::new(Instance::healthy(all, only_passing, names))
            }
            _ => Arc::default(),
        };
        self.read(&self.services, name, q, build).await
    }

    /// Reads `q` through `cache` under `key`; `build` turns the result into what is kept.
    async fn read<T: Clone + Send + 'static>(
        &self,
        cache: &Cache<T>,
        key: &str,
        q: Query,
        build: impl FnOnce(QueryResult) -> T,
    ) -> muster_server::Result<T> {
        if self.server.is_server() {
            self.read_local(cache, key, q, build).await
        } else {
            self.read_remote(cache, key, q, build).await
        }
    }

    /// On a server: an entry is current while nothing was applied since it was checked, and
    /// stays so while the query's index does not move: most queries cost one atomic load.
    async fn read_local<T: Clone>(
        &self,
        cache: &Cache<T>,
        key: &str,
        q: Query,
        build: impl FnOnce(QueryResult) -> T,
    ) -> muster_server::Result<T> {
        self.barrier().await?;
        let applied = self.server.applied_index().unwrap_or(0);
        if let Some(v) = get(cache, key, |e| e.applied == applied) {
            return Ok(v);
        }
        let meta = self.server.read_meta(Consistency::Stale, q.clone()).await?;
        let now = Instant::now();
        let reuse = |e: &mut Cached<T>| {
            let same = e.index == meta.index;
            if same {
                e.applied = applied;
                e.fetched = now;
                e.used = now;
            }
            same
        };
        if let Some(v) = get(cache, key, reuse) {
            return Ok(v);
        }
        let (result, meta) = self.server.read(Consistency::Stale, q).await?;
        let value = build(result);
        store(
            cache,
            key,
            Cached {
                applied,
                index: meta.index,
                fetched: now,
                used: now,
                watched: false,
                value: value.clone(),
            },
        );
        Ok(value)
    }

    /// Makes local state as fresh as DNS reads need: stale unless `allow_stale` is off or
    /// this server has not heard from the leader for `max_stale`, else the leader's view
    /// (the barrier settles it, so the local reads that follow may be stale reads).
    async fn barrier(&self) -> muster_server::Result<()> {
        if self.config.allow_stale {
            let meta = self.server.barrier(Consistency::Stale).await?;
            if u128::from(meta.last_contact_ms) <= self.config.max_stale.as_millis() {
                return Ok(());
            }
        }
        // Resolvers give up after a few seconds: wait for an election, not for Raft's hold.
        self.server
            .barrier_within(Consistency::Default, Duration::from_secs(1))
            .await?;
        Ok(())
    }

    /// On a client agent: with `use_cache`, a watched entry young enough is the answer;
    /// otherwise one read on a server, which also reports how stale that server is. Only a
    /// server that has not heard from the leader for `max_stale` is asked again, for the
    /// leader's view. When no server answers, an entry younger than `max_stale` is answered
    /// with.
    async fn read_remote<T: Clone + Send + 'static>(
        &self,
        cache: &Cache<T>,
        key: &str,
        q: Query,
        build: impl FnOnce(QueryResult) -> T,
    ) -> muster_server::Result<T> {
        let watched = self.config.use_cache;
        if watched {
            let now = Instant::now();
            let current = |e: &mut Cached<T>| {
                let age = e.fetched.elapsed();
                let ok = e.watched
                    && age <= self.config.max_stale
                    && (self.config.cache_max_age.is_zero() || age <= self.config.cache_max_age);
                if ok {
                    e.used = now;
                }
                ok
            };
            if let Some(v) = get(cache, key, current) {
                return Ok(v);
            }
        }
        let fresh = async {
            let mode = if self.config.allow_stale {
                Consistency::Stale
            } else {
                Consistency::Default
            };
            let (mut result, mut meta) = self.server.read(mode, q.clone()).await?;
            if mode == Consistency::Stale
                && u128::from(meta.last_contact_ms) > self.config.max_stale.as_millis()
            {
                (result, meta) = self.server.read(Consistency::Default, q.clone()).await?;
            }
            let value = build(result);
            let now = Instant::now();
            let entry = Cached {
                applied: 0,
                index: meta.index,
                fetched: now,
                used: now,
                watched,
                value: value.clone(),
            };
            if store(cache, key, entry) {
                tokio::spawn(watch_entry(
                    self.server.clone(),
                    cache.clone(),
                    key.to_string(),
                    q,
                    meta.index,
                    self.watch_wait(),
                ));
            }
            Ok(value)
        };
        match fresh.await {
            Ok(v) => Ok(v),
            Err(e) => {
                let max = self.config.max_stale;
                get(cache, key, |c| c.fetched.elapsed() <= max).ok_or(e)
            }
        }
    }

    /// How long a watcher's blocking query may park: it must come back (and confirm its
    /// entry) well within the ages `read` accepts.
    fn watch_wait(&self) -> Duration {
        let mut wait = WATCH_WAIT.min(self.config.max_stale / 2);
        if !self.config.cache_max_age.is_zero() {
            wait = wait.min(self.config.cache_max_age / 2);
        }
        wait.max(Duration::from_millis(100))
    }
}

/// The value under `key`, if `current` accepts its entry (and may refresh it).
fn get<T: Clone>(
    cache: &Cache<T>,
    key: &str,
    current: impl FnOnce(&mut Cached<T>) -> bool,
) -> Option<T> {
    let mut c = muster_server::sync::lock(cache);
    c.get_mut(key)
        .and_then(|e| current(e).then(|| e.value.clone()))
}

/// Keeps `entry` under `key`. True if it needs a watcher: it is watched, and no watcher
/// already keeps the same index (a concurrent miss that read the same index started one).
fn store<T>(cache: &Cache<T>, key: &str, entry: Cached<T>) -> bool {
    let mut c = muster_server::sync::lock(cache);
    // Bounds memory against queries for ever new names.
    if c.len() > 4096 {
        c.clear();
    }
    let watch = entry.watched
        && !c
            .get(key)
            .is_some_and(|e| e.watched && e.index == entry.index);
    c.insert(key.to_string(), entry);
    watch
}

/// Keeps a client agent's cached answer for `key` current (`use_cache`): a blocking query
/// parks on a server until the data behind it changes, and then the entry is dropped, so the
/// next lookup reads it afresh and starts a new watcher. Every return from the query without
/// a change confirms the entry. Ends when the entry goes unused for `WATCH_IDLE`.
async fn watch_entry<T>(
    server: Server,
    cache: Cache<T>,
    key: String,
    q: Query,
    index: u64,
    wait: Duration,
) {
    let lock = || muster_server::sync::lock(&cache);
    let mine = |e: &Cached<T>| e.watched && e.index == index;
    loop {
        {
            let mut c = lock();
            match c.get(&key) {
                Some(e) if mine(e) && e.used.elapsed() < WATCH_IDLE => {}
                Some(e) if mine(e) => {
                    c.remove(&key);
                    return;
                }
                _ => return,
            }
        }
        match server
            .wait_index(Consistency::Stale, q.clone(), index.max(1), wait)
            .await
        {
            Ok(meta) if meta.index == index => {
                if let Some(e) = lock().get_mut(&key).filter(|e| mine(e)) {
                    e.fetched = Instant::now();
                }
            }
            Ok(_) => {
                let mut c = lock();
                if c.get(&key).is_some_and(mine) {
                    c.remove(&key);
                }
                return;
            }
            // No server: the entry ages until `read` stops answering with it.
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

#[cfg(test)]
mod tests;
