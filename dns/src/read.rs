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

    /// The consistency to read at: stale unless `allow_stale` is off or this server has not
    /// heard from the leader for `max_stale`. On a server, a non-stale mode is settled here
    /// (the barrier), so the local reads that follow may be stale reads.
    async fn mode(&self) -> muster_server::Result<Consistency> {
        if !self.server.is_server() {
            // The server a client agent asks reports how stale it is: see `read`.
            return Ok(if self.config.allow_stale {
                Consistency::Stale
            } else {
                Consistency::Default
            });
        }
        if self.config.allow_stale {
            let meta = self.server.barrier(Consistency::Stale).await?;
            if u128::from(meta.last_contact_ms) <= self.config.max_stale.as_millis() {
                return Ok(Consistency::Stale);
            }
        }
        // Resolvers give up after a few seconds: wait for an election, not for Raft's hold.
        self.server
            .barrier_within(Consistency::Default, Duration::from_secs(1))
            .await?;
        Ok(Consistency::Default)
    }

    /// Reads `q` through `cache` under `key`; `build` turns the result into what is kept.
    ///
    /// On a server, an entry is current while nothing was applied since it was checked, and
    /// stays so while the query's index does not move: most queries cost one atomic load.
    /// On a client agent, each query asks a server for the index first; when no server
    /// answers, an entry younger than `max_stale` is answered with.
    async fn read<T: Clone + Send + 'static>(
        &self,
        cache: &Cache<T>,
        key: &str,
        q: Query,
        build: impl FnOnce(QueryResult) -> T,
    ) -> muster_server::Result<T> {
        let get = |current: &dyn Fn(&mut Cached<T>) -> bool| -> Option<T> {
            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
            c.get_mut(key)
                .and_then(|e| current(e).then(|| e.value.clone()))
        };
        let cached = self.config.use_cache && !self.server.is_server();
        if cached {
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
            if let Some(v) = get(&current) {
                return Ok(v);
            }
        }
        let mut mode = self.mode().await?;
        let applied = self.server.applied_index();
        if let Some(a) = applied {
            if let Some(v) = get(&|e| e.applied == a) {
                return Ok(v);
            }
            mode = Consistency::Stale;
        }
        // Only a client agent with `use_cache` keeps the query, for the entry's watcher.
        let q_watch = cached.then(|| q.clone());
        let fresh = async {
            let mut meta = self.server.read_meta(mode, q.clone()).await?;
            if mode == Consistency::Stale
                && applied.is_none()
                && u128::from(meta.last_contact_ms) > self.config.max_stale.as_millis()
            {
                mode = Consistency::Default;
                meta = self.server.read_meta(mode, q.clone()).await?;
            }
            let now = Instant::now();
            let reuse = |e: &mut Cached<T>| {
                // A watched entry found stale is read afresh, which restarts its watcher.
                let same = e.index == meta.index && !e.watched;
                if same {
                    e.applied = applied.unwrap_or(0);
                    e.fetched = now;
                    e.used = now;
                }
                same
            };
            if let Some(v) = get(&reuse) {
                return Ok(v);
            }
            let (result, meta) = self.server.read(mode, q).await?;
            let value = build(result);
            let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
            // Bounds memory against queries for ever new names.
            if c.len() > 4096 {
                c.clear();
            }
            // One watcher per entry: a concurrent miss that read the same index has one.
            let watch = cached
                && !c
                    .get(key)
                    .is_some_and(|e| e.watched && e.index == meta.index);
            let entry = Cached {
                applied: applied.unwrap_or(0),
                index: meta.index,
                fetched: now,
                used: now,
                watched: cached,
                value: value.clone(),
            };
            c.insert(key.to_string(), entry);
            if let Some(q) = q_watch.filter(|_| watch) {
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
            Err(e) if applied.is_none() => {
                let max = self.config.max_stale;
                get(&|c| c.fetched.elapsed() <= max).ok_or(e)
            }
            Err(e) => Err(e),
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
    let lock = || cache.lock().unwrap_or_else(|p| p.into_inner());
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
