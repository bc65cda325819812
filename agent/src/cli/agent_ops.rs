//! Commands about the local agent itself rather than the cluster: `reload` and `version`.

use super::client::{parse, Client};
use super::error::Result;
use crate::VERSION;

/// `muster reload`: the agent re-reads its configuration files.
pub(crate) async fn reload(args: &[String]) -> Result<i32> {
    let p = parse(args, &[])?;
    Client::new(&p)
        .call(reqwest::Method::PUT, "/v1/agent/reload", None)
        .await?;
    println!("Configuration reload triggered");
    Ok(0)
}

/// `muster version`: the version of this binary; it asks no agent.
pub(crate) fn version() -> i32 {
    println!("Muster v{VERSION}");
    0
}
