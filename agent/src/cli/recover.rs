//! `muster recover`: the offline repair of a server whose fellow servers are gone for good.

use super::error::{Error, Result};
use crate::flags::{self, Kind};

/// `muster recover -data-dir DIR`: offline, on a stopped server whose fellow servers are gone
/// for good, makes it the sole voter of its cluster, keeping its data.
pub(crate) async fn run(args: &[String]) -> Result<i32> {
    // An offline command: it takes none of the flags that address an agent.
    let p = flags::parse(args, &[("data-dir", Kind::Value)])?;
    let Some(dir) = p.value("data-dir") else {
        return Err(Error::usage(
            "muster recover needs -data-dir: the data dir of the stopped server to recover",
        ));
    };
    let r = muster_server::recover_sole_server(std::path::Path::new(dir)).await?;
    println!(
        "Recovered server {} ({}) as the only voter of its cluster (was: {}), at log index {} \
         in term {}. Start its agent as before: it elects itself with all its data, and servers \
         that join it are added as voters. The replaced servers are retired: if one comes back \
         with its old data dir, it sets that data aside and rejoins as a new member.",
        r.node_name,
        r.address,
        r.old_voters.join(", "),
        r.index,
        r.term
    );
    Ok(0)
}
