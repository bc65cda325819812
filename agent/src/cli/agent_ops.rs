//! Commands about the local agent itself rather than the cluster: `agent`'s help, `reload`
//! and `version`.

use super::client::Client;
use super::error::Result;
use crate::flags::Parsed;
use crate::VERSION;

pub(crate) const AGENT_USAGE: &str = "
Usage: muster agent [options]

  Starts the agent and runs until an interrupt is received. The
  agent represents a single node in a cluster.
";

pub(crate) const RELOAD_USAGE: &str = "
Usage: muster reload

  Causes the agent to reload configurations. This can be used instead
  of sending the SIGHUP signal to the agent.
";

pub(crate) const VERSION_USAGE: &str = "
Usage: muster version

  Prints the version of this binary; it asks no agent.
";

/// `muster reload`: the agent re-reads its configuration files.
pub(crate) async fn reload(p: &Parsed) -> Result<i32> {
    Client::new(p)
        .map_err(|e| e.context("Error connecting to Consul agent"))?
        .call(reqwest::Method::PUT, "/v1/agent/reload", None)
        .await
        .map_err(|e| e.context("Error reloading"))?;
    println!("Configuration reload triggered");
    Ok(0)
}

/// `muster version`: the version of this binary and of the Consul API it implements, in
/// Consul's layout; it asks no agent.
pub(crate) fn version() -> i32 {
    let (cur, min, max) = crate::cluster::tags::CONSUL_PROTOCOL;
    println!("Muster v{VERSION}");
    println!("Consul API v{}", crate::cluster::tags::CONSUL_VERSION);
    println!(
        "Protocol {cur} spoken by default, understands {min} to {max} (agent will automatically \
         use protocol >{cur} when speaking to compatible agents)"
    );
    0
}
