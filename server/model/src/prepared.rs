//! Prepared queries (Consul's `/v1/query`): the stored query, the request to run one, and
//! what running it found.
//!
//! A query's Consul definition has many optional fields and grows between Consul versions, so
//! it is kept as one JSON string ([`PreparedQuery::definition`]); only what the state machine
//! itself checks (name, session, whether it is a template) is kept apart. Adding a field to
//! the definition then never changes this binary format.

use serde::{Deserialize, Serialize};

use super::ServiceHealth;

/// A stored prepared query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedQuery {
    /// A UUID chosen by the proposer.
    pub id: String,
    /// Unique among queries, compared case-insensitively; empty for none. A template's name
    /// is the prefix of the names it answers.
    pub name: String,
    /// The session whose invalidation deletes this query; empty for none.
    pub session: String,
    /// Whether the definition has a `Template.Type`: the name is then a prefix, and the
    /// definition's strings are rendered for each name it answers.
    pub template: bool,
    /// The rest of Consul's definition as JSON (`Token`, `Template`, `Service`, `DNS`).
    pub definition: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A request to run a prepared query (`/v1/query/<id or name>/execute`, DNS `.query.`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedExecute {
    /// A query's ID, its name, or a name a template's prefix matches.
    pub id_or_name: String,
    /// `?near`: a node name, `_agent` or `_ip`; empty to use the query's own `Near`.
    pub near: String,
    /// The node of the agent that asked: what `_agent` stands for.
    pub agent_node: String,
    /// The address the request came from: what `_ip` looks up among the nodes.
    pub source_ip: String,
    /// At most this many instances; 0 for all.
    pub limit: u64,
    /// `?connect`: only Connect-capable instances.
    pub connect: bool,
}

/// What resolving (and running) a prepared query found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PreparedRun {
    /// No query has that ID or name, and no template's prefix matches it.
    NotFound,
    /// The query could not be resolved or rendered; Consul's reason.
    Failed(String),
    /// The query (a template rendered for the name asked) and the instances it selected, in
    /// the order to answer with (none when only explained).
    Found {
        query: PreparedQuery,
        nodes: Vec<ServiceHealth>,
    },
}
