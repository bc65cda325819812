//! The `muster` command line: the usage text, the table of commands, and running one. Client
//! commands talk to the local agent over HTTP (`client`); each family of them has its own
//! file. Adding a command is its file plus one row in [`COMMANDS`].

mod agent_ops;
mod catalog;
mod client;
mod error;
mod kv;
mod lock;
mod maint;
mod members;
mod recover;
mod services;
mod table;

use futures::future::LocalBoxFuture;

pub use error::{Error, Result};

/// A client command: its arguments after the command name in, its exit code out.
type ClientFn = for<'a> fn(&'a [String]) -> LocalBoxFuture<'a, Result<i32>>;

/// What a command name runs.
enum Run {
    /// Starts the agent; the binary supplies it, as it owns logging and the process.
    Agent,
    /// Prints the version without asking an agent.
    Version,
    /// A client command, run on a fresh runtime.
    Client(ClientFn),
}

/// One row of the dispatch table.
struct Command {
    name: &'static str,
    /// The line `muster help` shows for it.
    summary: &'static str,
    run: Run,
}

/// Every command, in the order `muster help` lists them.
const COMMANDS: &[Command] = &[
    Command {
        name: "agent",
        summary: "Runs a Muster agent",
        run: Run::Agent,
    },
    Command {
        name: "members",
        summary: "Lists the members of the cluster",
        run: Run::Client(|a| Box::pin(members::members(a))),
    },
    Command {
        name: "join",
        summary: "Tells the local agent to join a cluster",
        run: Run::Client(|a| Box::pin(members::join(a))),
    },
    Command {
        name: "leave",
        summary: "Gracefully leaves the cluster and shuts the local agent down",
        run: Run::Client(|a| Box::pin(members::leave(a))),
    },
    Command {
        name: "force-leave",
        summary: "Forces a member of the cluster to enter the \"left\" state",
        run: Run::Client(|a| Box::pin(members::force_leave(a))),
    },
    Command {
        name: "kv",
        summary: "Reads and writes the KV store (get, put, delete, export, import)",
        run: Run::Client(|a| Box::pin(kv::run(a))),
    },
    Command {
        name: "catalog",
        summary: "Lists nodes and services in the catalog",
        run: Run::Client(|a| Box::pin(catalog::run(a))),
    },
    Command {
        name: "lock",
        summary: "Runs a command while holding a lock",
        run: Run::Client(|a| Box::pin(lock::run(a))),
    },
    Command {
        name: "maint",
        summary: "Controls node or service maintenance mode",
        run: Run::Client(|a| Box::pin(maint::run(a))),
    },
    Command {
        name: "services",
        summary: "Registers or deregisters services with the local agent",
        run: Run::Client(|a| Box::pin(services::run(a))),
    },
    Command {
        name: "reload",
        summary: "Re-reads the agent's configuration files",
        run: Run::Client(|a| Box::pin(agent_ops::reload(a))),
    },
    Command {
        name: "recover",
        summary: "Makes a stopped server the only voter of its cluster, keeping its data",
        run: Run::Client(|a| Box::pin(recover::run(a))),
    },
    Command {
        name: "version",
        summary: "Prints the version",
        run: Run::Version,
    },
];

/// The text `muster help` prints, and `muster` alone prints to stderr.
fn usage() -> String {
    let mut text = String::from("Usage: muster <command> [args]\n\nCommands:");
    for c in COMMANDS {
        text.push_str(&format!("\n    {:<12} {}", c.name, c.summary));
    }
    text
}

/// Runs the command line `args` (without the program name) and returns the exit code.
/// `agent` runs `muster agent ARGS`.
pub fn main(args: &[String], agent: fn(&[String]) -> i32) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{}", usage());
        return 1;
    };
    // `agent`, `version` and `help` also answer to Go's spellings `-version`, `--help`;
    // client commands only to their own name.
    let bare = cmd.trim_start_matches('-');
    if matches!(bare, "help" | "h") {
        println!("{}", usage());
        return 0;
    }
    let found = COMMANDS.iter().find(|c| match c.run {
        Run::Client(_) => c.name == cmd,
        Run::Agent | Run::Version => c.name == bare,
    });
    let result = match found.map(|c| &c.run) {
        Some(Run::Agent) => return agent(rest),
        Some(Run::Version) => return agent_ops::version(),
        Some(Run::Client(f)) => runtime().and_then(|rt| rt.block_on(f(rest))),
        None => Err(Error::UnknownCommand(cmd.clone())),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {}", e.report());
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
