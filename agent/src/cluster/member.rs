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

    /// The probe ring is ordered by a hash of the node name: every agent computes the same
    /// order whatever its Rust version (FNV-1a, then a finalizer to spread similar names).
    fn ring_key(&self) -> u64 {
        let fnv = self.name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        // splitmix64's finalizer.
        let mut z = fnv;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
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

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn id(name: &str, port: u16, incarnation: u32) -> MemberId {
        MemberId {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            name: name.to_string(),
            tags: BTreeMap::new(),
            incarnation,
        }
    }

    #[test]
    fn ring_key_depends_on_the_name_only_and_spreads_similar_names() {
        // Every agent must place a member at the same spot whatever its address, tags or
        // incarnation, and whatever the Rust version (so no std hasher): a fixed value.
        assert_eq!(
            id("web01", 8301, 0).ring_key(),
            id("web01", 9000, 7).ring_key()
        );
        assert_eq!(0x137a_c7eb_aa9e_ebf8, id("web01", 8301, 0).ring_key());
        // Names that differ in one character land all over the ring, not side by side.
        let mut keys: Vec<u64> = (0..1000)
            .map(|i| id(&format!("node{i:03}"), 8301, 0).ring_key())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 1000);
        let top_bits: std::collections::HashSet<u64> = keys.iter().map(|k| k >> 60).collect();
        assert_eq!(top_bits.len(), 16, "the first hex digit takes every value");
    }
}
