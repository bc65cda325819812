//! `muster recover`: the offline repair of a server whose fellow servers are gone for good.

use super::error::{Error, Result};
use super::help::Flag;
use crate::flags::Parsed;

pub(crate) const RECOVER_USAGE: &str = "
Usage: muster recover -data-dir DIR

  Offline, on a stopped server whose fellow servers are gone for good: makes
  it the sole voter of its cluster, keeping its data. It takes none of the
  flags that address an agent.
";

pub(crate) const RECOVER_FLAGS: &[Flag] = &[Flag::value(
    "data-dir",
    "path",
    "The data dir of the stopped server to recover.",
)];

/// `muster recover -data-dir DIR`: offline, on a stopped server whose fellow servers are gone
/// for good, makes it the sole voter of its cluster, keeping its data.
pub(crate) async fn run(p: &Parsed) -> Result<i32> {
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
