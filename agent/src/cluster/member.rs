//! Who is in the cluster as gossip sees it: a member's identity on the wire ([`MemberId`]),
//! its state ([`Status`]) and the table of members ([`Members`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A member's identity on the wire: its address, name and Serf-style tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    pub addr: SocketAddr,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    /// Bumped when the same agent rejoins after being declared down.
    pub incarnation: u32,
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            incarnation: self.incarnation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

/// Serf's member states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Alive,
    Leaving,
    Left,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Leaving => "leaving",
            Status::Left => "left",
            Status::Failed => "failed",
        }
    }

    /// Serf's numeric code in `/v1/agent/members`.
    pub fn code(self) -> u8 {
        match self {
            Status::Alive => 1,
            Status::Leaving => 2,
            Status::Left => 3,
            Status::Failed => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: MemberId,
    pub status: Status,
    pub since: Instant,
}

/// Membership as this agent sees it, keyed by node name. Includes itself.
pub type Members = Arc<RwLock<HashMap<String, Member>>>;
