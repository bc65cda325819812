//! The `muster` command line: the table of commands, and running one as Consul's CLI
//! (mitchellh/cli) runs it. Client commands talk to the local agent over HTTP (`client`);
//! each family of them has its own file, which holds its commands' usage texts and flags.
//! Adding a command is its function plus one row in [`COMMANDS`].
//!
//! As in Consul: `-h`, `-help` or `--help` anywhere before `--` prints the command's help to
//! stderr and exits 0; a family name alone (`muster kv`) prints its help and exits 1; an
//! unknown command prints the command list to stderr and exits 127.

mod acl;
mod agent_ops;
mod autopilot;
mod catalog;
mod client;
mod client_tls;
mod error;
mod event;
mod exec;
mod help;
mod info;
mod keyring;
mod kv;
mod kv_transfer;
mod lock;
mod login;
mod maint;
mod members;
mod monitor;
mod operator;
mod query;
mod recover;
mod rtt;
mod services;
mod snapshot;
mod table;
mod template;
mod tls;
mod watch;

use futures::future::LocalBoxFuture;

use crate::flags::{self, Parsed};
use help::{Flag, Http};

/// Path escaping for the template watchers' reads.
pub(crate) use client::url_escape;
pub use error::{Error, Result};

/// A client command: its parsed flags and arguments in, its exit code out.
type ClientFn = for<'a> fn(&'a Parsed) -> LocalBoxFuture<'a, Result<i32>>;

/// What a command name runs.
enum Run {
    /// Starts the agent; the binary supplies it, as it owns logging and the process.
    Agent,
    /// Prints the version without asking an agent.
    Version,
    /// A family of subcommands: alone, it prints its help and exits 1.
    Family,
    /// A client command, run on a fresh runtime.
    Client(ClientFn),
}

/// One row of the dispatch table.
struct Command {
    /// The words that name it: `members`, `kv get`.
    name: &'static str,
    /// The line the command lists show for it.
    synopsis: &'static str,
    /// The usage paragraph its help opens with.
    usage: &'static str,
    /// Which of the flags that address the agent it takes.
    http: Http,
    /// Its own flags.
    flags: &'static [Flag],
    run: Run,
}

/// Every command.
const COMMANDS: &[Command] = &[
    Command {
        name: "agent",
        synopsis: "Runs a Muster agent",
        usage: agent_ops::AGENT_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Agent,
    },
    Command {
        name: "members",
        synopsis: "Lists the members of a cluster",
        usage: members::MEMBERS_USAGE,
        http: Http::Client,
        flags: members::MEMBERS_FLAGS,
        run: Run::Client(|p| Box::pin(members::members(p))),
    },
    Command {
        name: "join",
        synopsis: "Tell the agent to join a cluster",
        usage: members::JOIN_USAGE,
        http: Http::Client,
        flags: members::JOIN_FLAGS,
        run: Run::Client(|p| Box::pin(members::join(p))),
    },
    Command {
        name: "leave",
        synopsis: "Gracefully leaves the cluster and shuts down",
        usage: members::LEAVE_USAGE,
        http: Http::Client,
        flags: &[],
        run: Run::Client(|p| Box::pin(members::leave(p))),
    },
    Command {
        name: "force-leave",
        synopsis: "Forces a member of the cluster to enter the \"left\" state",
        usage: members::FORCE_LEAVE_USAGE,
        http: Http::Server,
        flags: members::FORCE_LEAVE_FLAGS,
        run: Run::Client(|p| Box::pin(members::force_leave(p))),
    },
    Command {
        name: "rtt",
        synopsis: "Estimates network round trip time between nodes",
        usage: rtt::RTT_USAGE,
        http: Http::Client,
        flags: rtt::RTT_FLAGS,
        run: Run::Client(|p| Box::pin(rtt::rtt(p))),
    },
    Command {
        name: "keygen",
        synopsis: "Generates a new encryption key",
        usage: keyring::KEYGEN_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Client(|_| Box::pin(async { Ok(keyring::keygen()) })),
    },
    Command {
        name: "keyring",
        synopsis: "Manages gossip layer encryption keys",
        usage: keyring::KEYRING_USAGE,
        http: Http::Client,
        flags: keyring::KEYRING_FLAGS,
        run: Run::Client(|p| Box::pin(keyring::keyring(p))),
    },
    Command {
        name: "info",
        synopsis: "Provides debugging information for operators.",
        usage: info::INFO_USAGE,
        http: Http::Client,
        flags: &[],
        run: Run::Client(|p| Box::pin(info::info(p))),
    },
    Command {
        name: "monitor",
        synopsis: "Stream logs from a Muster agent",
        usage: monitor::MONITOR_USAGE,
        http: Http::Client,
        flags: monitor::MONITOR_FLAGS,
        run: Run::Client(|p| Box::pin(monitor::monitor(p))),
    },
    Command {
        name: "operator",
        synopsis: "Provides cluster-level tools for Muster operators",
        usage: operator::OPERATOR_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Family,
    },
    Command {
        name: "operator raft",
        synopsis: "Provides cluster-level tools for Muster operators",
        usage: operator::RAFT_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Family,
    },
    Command {
        name: "operator autopilot",
        synopsis: "Provides tools for modifying Autopilot configuration",
        usage: autopilot::AUTOPILOT_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Family,
    },
    Command {
        name: "operator autopilot get-config",
        synopsis: "Display the current Autopilot configuration",
        usage: autopilot::GET_CONFIG_USAGE,
        http: Http::Server,
        flags: &[],
        run: Run::Client(|p| Box::pin(autopilot::get_config(p))),
    },
    Command {
        name: "operator autopilot set-config",
        synopsis: "Modify the current Autopilot configuration",
        usage: autopilot::SET_CONFIG_USAGE,
        http: Http::Client,
        flags: autopilot::SET_CONFIG_FLAGS,
        run: Run::Client(|p| Box::pin(autopilot::set_config(p))),
    },
    Command {
        name: "operator autopilot state",
        synopsis: "Display the current Autopilot state",
        usage: autopilot::STATE_USAGE,
        http: Http::Server,
        flags: autopilot::STATE_FLAGS,
        run: Run::Client(|p| Box::pin(autopilot::state(p))),
    },
    Command {
        name: "operator raft list-peers",
        synopsis: "Display the current Raft peer configuration",
        usage: operator::LIST_PEERS_USAGE,
        http: Http::Server,
        flags: &[],
        run: Run::Client(|p| Box::pin(operator::list_peers(p))),
    },
    Command {
        name: "operator raft remove-peer",
        synopsis: "Remove a Muster server from the Raft configuration",
        usage: operator::REMOVE_PEER_USAGE,
        http: Http::Client,
        flags: operator::REMOVE_PEER_FLAGS,
        run: Run::Client(|p| Box::pin(operator::remove_peer(p))),
    },
    Command {
        name: "operator raft transfer-leader",
        synopsis: "Transfer Raft leadership to another server",
        usage: operator::TRANSFER_LEADER_USAGE,
        http: Http::Client,
        flags: operator::TRANSFER_LEADER_FLAGS,
        run: Run::Client(|p| Box::pin(operator::transfer_leader(p))),
    },
    Command {
        name: "kv",
        synopsis: "Interact with the key-value store",
        usage: kv::KV_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Family,
    },
    Command {
        name: "kv get",
        synopsis: "Retrieves or lists data from the KV store",
        usage: kv::GET_USAGE,
        http: Http::Server,
        flags: kv::GET_FLAGS,
        run: Run::Client(|p| Box::pin(kv::kv_get(p))),
    },
    Command {
        name: "kv put",
        synopsis: "Sets or updates data in the KV store",
        usage: kv::PUT_USAGE,
        http: Http::Server,
        flags: kv::PUT_FLAGS,
        run: Run::Client(|p| Box::pin(kv::kv_put(p))),
    },
    Command {
        name: "kv delete",
        synopsis: "Removes data from the KV store",
        usage: kv::DELETE_USAGE,
        http: Http::Server,
        flags: kv::DELETE_FLAGS,
        run: Run::Client(|p| Box::pin(kv::kv_delete(p))),
    },
    Command {
        name: "kv export",
        synopsis: "Exports a tree from the KV store as JSON",
        usage: kv_transfer::EXPORT_USAGE,
        http: Http::Server,
        flags: &[],
        run: Run::Client(|p| Box::pin(kv_transfer::kv_export(p))),
    },
    Command {
        name: "kv import",
        synopsis: "Imports a tree stored as JSON to the KV store",
        usage: kv_transfer::IMPORT_USAGE,
        http: Http::Server,
        flags: kv_transfer::IMPORT_FLAGS,
        run: Run::Client(|p| Box::pin(kv_transfer::kv_import(p))),
    },
    Command {
        name: "snapshot",
        synopsis: "Saves, restores and inspects snapshots of Muster server state",
        usage: snapshot::SNAPSHOT_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Family,
    },
    Command {
        name: "snapshot save",
        synopsis: "Saves snapshot of Muster server state",
        usage: snapshot::SAVE_USAGE,
        http: Http::Server,
        flags: &[],
        run: Run::Client(|p| Box::pin(snapshot::save(p))),
    },
    Command {
        name: "snapshot restore",
        synopsis: "Restores snapshot of Muster server state",
        usage: snapshot::RESTORE_USAGE,
        http: Http::Client,
        flags: &[],
        run: Run::Client(|p| Box::pin(snapshot::restore(p))),
    },
    Command {
        name: "snapshot inspect",
        synopsis: "Displays information about a Muster snapshot file",
        usage: snapshot::INSPECT_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Client(|p| Box::pin(snapshot::inspect(p))),
    },
    Command {
        name: "catalog",
        synopsis: "Interact with the catalog",
        usage: catalog::CATALOG_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Family,
    },
    Command {
        name: "catalog datacenters",
        synopsis: "Lists all known datacenters",
        usage: catalog::DATACENTERS_USAGE,
        http: Http::Server,
        flags: &[],
        run: Run::Client(|p| Box::pin(catalog::datacenters(p))),
    },
    Command {
        name: "catalog nodes",
        synopsis: "Lists all nodes in the given datacenter",
        usage: catalog::NODES_USAGE,
        http: Http::Server,
        flags: catalog::NODES_FLAGS,
        run: Run::Client(|p| Box::pin(catalog::nodes(p))),
    },
    Command {
        name: "catalog services",
        synopsis: "Lists all registered services in a datacenter",
        usage: catalog::SERVICES_USAGE,
        http: Http::Server,
        flags: catalog::SERVICES_FLAGS,
        run: Run::Client(|p| Box::pin(catalog::services(p))),
    },
    Command {
        name: "lock",
        synopsis: "Execute a command holding a lock",
        usage: lock::LOCK_USAGE,
        http: Http::Server,
        flags: lock::LOCK_FLAGS,
        run: Run::Client(|p| Box::pin(lock::run(p))),
    },
    Command {
        name: "event",
        synopsis: "Fire a new event",
        usage: event::EVENT_USAGE,
        http: Http::Server,
        flags: event::EVENT_FLAGS,
        run: Run::Client(|p| Box::pin(event::run(p))),
    },
    Command {
        name: "exec",
        synopsis: "Executes a command on Muster nodes",
        usage: exec::EXEC_USAGE,
        http: Http::Server,
        flags: exec::EXEC_FLAGS,
        run: Run::Client(|p| Box::pin(exec::run(p))),
    },
    Command {
        name: "query",
        synopsis: "Send a query to the cluster and gather the answers",
        usage: query::QUERY_USAGE,
        http: Http::Client,
        flags: query::QUERY_FLAGS,
        run: Run::Client(|p| Box::pin(query::run(p))),
    },
    Command {
        name: "maint",
        synopsis: "Controls node or service maintenance mode",
        usage: maint::MAINT_USAGE,
        http: Http::Client,
        flags: maint::MAINT_FLAGS,
        run: Run::Client(|p| Box::pin(maint::run(p))),
    },
    Command {
        name: "services",
        synopsis: "Interact with services",
        usage: services::SERVICES_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Family,
    },
    Command {
        name: "services register",
        synopsis: "Register services with the local agent",
        usage: services::REGISTER_USAGE,
        http: Http::Server,
        flags: services::REGISTER_FLAGS,
        run: Run::Client(|p| Box::pin(services::register(p))),
    },
    Command {
        name: "services deregister",
        synopsis: "Deregister services with the local agent",
        usage: services::DEREGISTER_USAGE,
        http: Http::Server,
        flags: services::DEREGISTER_FLAGS,
        run: Run::Client(|p| Box::pin(services::deregister(p))),
    },
    Command {
        name: "reload",
        synopsis: "Triggers the agent to reload configuration files",
        usage: agent_ops::RELOAD_USAGE,
        http: Http::Client,
        flags: &[],
        run: Run::Client(|p| Box::pin(agent_ops::reload(p))),
    },
    Command {
        name: "recover",
        synopsis: "Makes a stopped server the only voter of its cluster, keeping its data",
        usage: recover::RECOVER_USAGE,
        http: Http::None,
        flags: recover::RECOVER_FLAGS,
        run: Run::Client(|p| Box::pin(recover::run(p))),
    },
    Command {
        name: "tls",
        synopsis: "Builtin helpers for creating CAs and certificates",
        usage: tls::TLS_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Family,
    },
    Command {
        name: "tls ca",
        synopsis: "Helpers for CAs",
        usage: tls::CA_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Family,
    },
    Command {
        name: "tls ca create",
        synopsis: "Create a new consul CA",
        usage: tls::CA_CREATE_USAGE,
        http: Http::None,
        flags: tls::CA_CREATE_FLAGS,
        run: Run::Client(|p| Box::pin(tls::ca_create(p))),
    },
    Command {
        name: "tls cert",
        synopsis: "Helpers for certificates",
        usage: tls::CERT_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Family,
    },
    Command {
        name: "tls cert create",
        synopsis: "Create a new certificate",
        usage: tls::CERT_CREATE_USAGE,
        http: Http::None,
        flags: tls::CERT_CREATE_FLAGS,
        run: Run::Client(|p| Box::pin(tls::cert_create(p))),
    },
    Command {
        name: "template",
        synopsis: "Renders templates from the catalog and KV (consul-template)",
        usage: template::TEMPLATE_USAGE,
        http: Http::Client,
        flags: template::TEMPLATE_FLAGS,
        run: Run::Client(|p| Box::pin(template::template(p))),
    },
    Command {
        name: "watch",
        synopsis: "Watch for changes in Consul",
        usage: watch::WATCH_USAGE,
        http: Http::Server,
        flags: watch::WATCH_FLAGS,
        run: Run::Client(|p| Box::pin(watch::watch(p))),
    },
    Command {
        name: "version",
        synopsis: "Prints the version",
        usage: agent_ops::VERSION_USAGE,
        http: Http::None,
        flags: &[],
        run: Run::Version,
    },
];

/// Every command: the table above, then the ACL family's rows (`acl/mod.rs`).
fn commands() -> impl Iterator<Item = &'static Command> {
    COMMANDS.iter().chain(acl::COMMANDS)
}

impl Command {
    fn find(name: &str) -> Option<&'static Command> {
        commands().find(|c| c.name == name)
    }

    /// How this command takes the flag `name`, if it takes it.
    fn flag_kind(&self, name: &str) -> Option<flags::Kind> {
        help::http_flags(self.http)
            .chain(self.flags)
            .find(|f| f.name == name)
            .map(|f| f.kind)
    }

    /// What `-h` prints: the usage and flags, and a family's subcommands.
    fn help(&self) -> String {
        let mut text = help::command_help(self.usage, self.http, self.flags);
        if let Run::Agent = self.run {
            text.push_str("\n\nCommand Options\n");
            for (name, kind) in crate::config::AGENT_FLAGS {
                match kind {
                    flags::Kind::Bool => text.push_str(&format!("\n  -{name}")),
                    _ => text.push_str(&format!("\n  -{name}=<value>")),
                }
            }
        }
        let prefix = format!("{} ", self.name);
        let subs: Vec<&Command> = commands()
            .filter(|c| {
                c.name
                    .strip_prefix(&prefix)
                    .is_some_and(|s| !s.contains(' '))
            })
            .collect();
        if !subs.is_empty() {
            text.push_str("\n\nSubcommands:");
            text.push_str(&command_list(&subs, &prefix));
        }
        text
    }
}

/// `    NAME    SYNOPSIS` lines for `commands`, sorted, names without `prefix` and aligned.
fn command_list(commands: &[&Command], prefix: &str) -> String {
    let mut rows: Vec<(&str, &str)> = commands
        .iter()
        .map(|c| (c.name.strip_prefix(prefix).unwrap_or(c.name), c.synopsis))
        .collect();
    rows.sort();
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(n, s)| format!("\n    {n:<width$}    {s}"))
        .collect()
}

/// The text `muster help` prints, and `muster` alone or with an unknown command prints to
/// stderr (as Consul's `BasicHelpFunc` lays it out).
fn usage() -> String {
    let top: Vec<&Command> = commands().filter(|c| !c.name.contains(' ')).collect();
    format!(
        "Usage: muster [--version] [--help] <command> [<args>]\n\nAvailable commands are:{}\n",
        command_list(&top, "")
    )
}

fn is_help(arg: &str) -> bool {
    matches!(arg, "-h" | "-help" | "--help")
}

/// Runs the command line `args` (without the program name) and returns the exit code.
/// `agent` runs `muster agent ARGS`.
pub fn main(args: &[String], agent: fn(&[String]) -> i32) -> i32 {
    if args
        .first()
        .is_some_and(|a| matches!(a.as_str(), "-v" | "-version" | "--version"))
    {
        return agent_ops::version();
    }
    if args.first().is_some_and(|a| a == "help") {
        println!("{}", usage());
        return 0;
    }
    let before_dashes = args.iter().position(|a| a == "--").unwrap_or(args.len());
    let wants_help = args[..before_dashes].iter().any(|a| is_help(a));
    // The command is named by the first word that is not a flag, and the next ones when
    // they name a subcommand; flags before it are not the command's.
    let Some(start) = args[..before_dashes]
        .iter()
        .position(|a| !a.starts_with('-'))
    else {
        eprintln!("{}", usage());
        return if wants_help && !args.is_empty() {
            0
        } else {
            127
        };
    };
    let top_flags = args[..start].iter().any(|a| !is_help(a));
    // The longest run of up to three words that names a command (`acl token create`, `tls ca create`).
    let (cmd, rest) = (1..=3)
        .rev()
        .filter(|n| start + n <= before_dashes)
        .find_map(|n| {
            let words = &args[start..start + n];
            if n > 1 && words[1..].iter().any(|w| w.starts_with('-')) {
                return None;
            }
            Command::find(&words.join(" ")).map(|c| (Some(c), &args[start + n..]))
        })
        .unwrap_or((None, &args[start + 1..]));
    let Some(cmd) = cmd else {
        eprintln!("{}", usage());
        return 127;
    };
    if wants_help {
        eprintln!("{}", cmd.help());
        return 0;
    }
    if top_flags {
        eprintln!(
            "Invalid flags before the subcommand. If these flags are for\n\
             the subcommand, please put them after the subcommand.\n\n{}",
            cmd.help()
        );
        return 1;
    }
    let f = match cmd.run {
        Run::Agent => return agent(rest),
        Run::Version => return agent_ops::version(),
        Run::Family => {
            eprintln!("{}", cmd.help());
            return 1;
        }
        Run::Client(f) => f,
    };
    let parsed = match flags::parse_with(rest, |name| cmd.flag_kind(name)) {
        Ok(p) => p,
        Err(e) => {
            // Go's flag package prints the error, then the usage.
            eprintln!("{e}\n\n{}", cmd.help());
            return 1;
        }
    };
    match runtime().and_then(|rt| rt.block_on(f(&parsed))) {
        Ok(code) => code,
        Err(e) => {
            if e.is_whole_line() {
                eprintln!("{}", e.report());
            } else {
                eprintln!("Error: {}", e.report());
            }
            if let Error::UsageHelp(_) = e {
                eprintln!("\n{}", cmd.help());
            }
            1
        }
    }
}

/// The multi-threaded runtime the agent and the client commands run on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_has_its_family_and_unique_flags() {
        for c in commands() {
            if let Some((family, _)) = c.name.split_once(' ') {
                assert!(
                    matches!(Command::find(family).map(|f| &f.run), Some(Run::Family)),
                    "{}",
                    c.name
                );
            }
            let mut names: Vec<&str> = help::http_flags(c.http)
                .chain(c.flags)
                .map(|f| f.name)
                .collect();
            names.sort_unstable();
            let n = names.len();
            names.dedup();
            assert_eq!(n, names.len(), "{} defines a flag twice", c.name);
        }
    }

    #[test]
    fn family_help_lists_its_subcommands() {
        let kv = Command::find("kv").expect("kv");
        let h = kv.help();
        assert!(
            h.contains("\n\nSubcommands:\n    delete    Removes data from the KV store"),
            "{h}"
        );
        assert!(
            h.contains("\n    put       Sets or updates data in the KV store"),
            "{h}"
        );
    }
}
