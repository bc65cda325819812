//! Every command's flags with their descriptions, and the help text `-h` prints, laid out as
//! Consul's `command/flags` lays it out: the usage paragraph, then "HTTP API Options" (the
//! flags that address the agent) and "Command Options", each flag wrapped under its name.

use crate::flags::Kind;

/// One flag a command accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flag {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// What the value is, for `-name=<arg>` in the help; empty for a boolean.
    pub(crate) arg: &'static str,
    pub(crate) usage: &'static str,
}

impl Flag {
    pub(crate) const fn bool(name: &'static str, usage: &'static str) -> Flag {
        Flag {
            name,
            kind: Kind::Bool,
            arg: "",
            usage,
        }
    }

    pub(crate) const fn value(name: &'static str, arg: &'static str, usage: &'static str) -> Flag {
        Flag {
            name,
            kind: Kind::Value,
            arg,
            usage,
        }
    }

    /// A flag that may be given several times, every value kept.
    pub(crate) const fn multi(name: &'static str, arg: &'static str, usage: &'static str) -> Flag {
        Flag {
            name,
            kind: Kind::Multi,
            arg,
            usage,
        }
    }
}

/// Which of the flags that address the agent a command takes, as Consul's `HTTPFlags` splits
/// them: every client command takes the client flags; reads of replicated state also the
/// server flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Http {
    /// An offline command (or the agent itself): none.
    None,
    /// `-http-addr`, `-token`, `-token-file` and the TLS flags.
    Client,
    /// The client flags plus `-datacenter` and `-stale`.
    Server,
}

/// The flags that find the agent and authenticate to it.
pub(crate) const CLIENT_FLAGS: &[Flag] = &[
    Flag::value(
        "ca-file",
        "value",
        "Path to a CA file to use for TLS when communicating with Consul. This can also be \
         specified via the CONSUL_CACERT environment variable.",
    ),
    Flag::value(
        "ca-path",
        "value",
        "Path to a directory of CA certificates to use for TLS when communicating with \
         Consul. This can also be specified via the CONSUL_CAPATH environment variable.",
    ),
    Flag::value(
        "client-cert",
        "value",
        "Path to a client cert file to use for TLS when 'verify_incoming' is enabled. This \
         can also be specified via the CONSUL_CLIENT_CERT environment variable.",
    ),
    Flag::value(
        "client-key",
        "value",
        "Path to a client key file to use for TLS when 'verify_incoming' is enabled. This \
         can also be specified via the CONSUL_CLIENT_KEY environment variable.",
    ),
    Flag::value(
        "http-addr",
        "address",
        "The address and port of the HTTP agent. The value can be an IP address or DNS \
         address, but it must also include the port. This can also be specified via the \
         CONSUL_HTTP_ADDR (or MUSTER_HTTP_ADDR) environment variable. The default value is \
         http://127.0.0.1:8500.",
    ),
    Flag::value(
        "tls-server-name",
        "value",
        "The server name to use as the SNI host when connecting via TLS. This can also be \
         specified via the CONSUL_TLS_SERVER_NAME environment variable.",
    ),
    Flag::value(
        "token",
        "value",
        "ACL token to use in the request. This can also be specified via the \
         CONSUL_HTTP_TOKEN environment variable. If unspecified, the query will default to \
         the token of the agent at the HTTP address.",
    ),
    Flag::value(
        "token-file",
        "value",
        "File containing the ACL token to use in the request instead of one specified via \
         the -token argument or CONSUL_HTTP_TOKEN environment variable. This can also be \
         specified via the CONSUL_HTTP_TOKEN_FILE environment variable.",
    ),
];

/// The flags that choose which servers answer.
pub(crate) const SERVER_FLAGS: &[Flag] = &[
    Flag::value(
        "datacenter",
        "value",
        "Name of the datacenter to query. If unspecified, this will default to the \
         datacenter of the queried agent.",
    ),
    Flag::bool(
        "stale",
        "Permit any server (non-leader) to respond to this request. This allows for lower \
         latency and higher throughput, but can result in stale data. This option has no \
         effect on non-read operations. The default value is false.",
    ),
];

/// The HTTP flags a command of kind `http` takes.
pub(crate) fn http_flags(http: Http) -> impl Iterator<Item = &'static Flag> {
    let (client, server): (&[Flag], &[Flag]) = match http {
        Http::None => (&[], &[]),
        Http::Client => (CLIENT_FLAGS, &[]),
        Http::Server => (CLIENT_FLAGS, SERVER_FLAGS),
    };
    client.iter().chain(server)
}

/// A command's help: its usage text, then its flags under Consul's two headings.
pub(crate) fn command_help(usage: &str, http: Http, own: &[Flag]) -> String {
    let mut out = usage.trim().to_string();
    out.push_str("\n\n");
    let http: Vec<&Flag> = http_flags(http).collect();
    for (title, flags) in [
        ("HTTP API Options", http),
        ("Command Options", own.iter().collect()),
    ] {
        if flags.is_empty() {
            continue;
        }
        out.push_str(title);
        out.push_str("\n\n");
        for f in flags {
            if f.arg.is_empty() {
                out.push_str(&format!("  -{}\n", f.name));
            } else {
                out.push_str(&format!("  -{}=<{}>\n", f.name, f.arg));
            }
            out.push_str(&wrap(f.usage, 5));
            out.push_str("\n\n");
        }
    }
    out.trim_end_matches('\n').to_string()
}

/// Consul's help lines are at most 72 columns, `pad` of them indentation.
const MAX_LINE: usize = 72;

/// Wraps `text` at word boundaries to fit `MAX_LINE` after `pad` spaces of indentation.
fn wrap(text: &str, pad: usize) -> String {
    let width = MAX_LINE - pad;
    let indent = " ".repeat(pad);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
        .iter()
        .map(|l| format!("{indent}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_http_then_command_options_wrapped() {
        let h = command_help(
            "\nUsage: muster x [options]\n\n  Does x.\n",
            Http::Client,
            &[Flag::bool(
                "detailed",
                "Provides detailed information about nodes.",
            )],
        );
        assert!(h.starts_with("Usage: muster x [options]\n\n  Does x.\n\nHTTP API Options\n\n"));
        assert!(h.contains("\n  -http-addr=<address>\n     The address"));
        assert!(h.ends_with(
            "Command Options\n\n  -detailed\n     Provides detailed information about nodes."
        ));
        assert!(h.lines().all(|l| l.len() <= MAX_LINE), "{h}");
    }
}
