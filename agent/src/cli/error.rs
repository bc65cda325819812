//! What a client command can fail with. Messages that Consul's CLI also prints are worded as
//! it words them and printed as they are ([`Error::is_whole_line`]); the others are printed
//! after `Error: `. Where a variant wraps a cause as its `source`, the cause follows after
//! `: `.

use crate::flags;

/// A client command's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The async runtime the commands run on could not start.
    #[error("start runtime: {0}")]
    Runtime(std::io::Error),
    /// A flag was undefined, lacked its value or had a malformed one; worded as Go's `flag`
    /// package words it.
    #[error(transparent)]
    Flags(#[from] flags::Error),
    /// Arguments the command cannot work with: the whole line Consul's CLI prints for them.
    #[error("{0}")]
    Usage(String),
    /// The agent refused the operation or had nothing to show (no such key, CAS failed):
    /// the whole line Consul's CLI prints for it.
    #[error("{0}")]
    Refused(String),
    /// Like `Usage`, and the command's help follows the message, as Consul's `join` and
    /// `force-leave` print it.
    #[error("{0}")]
    UsageHelp(String),
    /// A step failed: `what` is Consul's wording of the step ("Error retrieving members"),
    /// the cause follows after `: `.
    #[error("{what}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },
    /// The agent's address or token could not be worked out (a bad scheme, an unreadable
    /// token file).
    #[error("{0}")]
    Connect(String),
    /// A flag's value did not parse (a duration, for example).
    #[error("invalid value {value:?} for flag -{flag}")]
    InvalidFlag { flag: &'static str, value: String },
    /// `members -status` was not a valid regular expression.
    #[error("Failed to compile status regexp: {reason}")]
    StatusRegex {
        pattern: String,
        reason: regex_lite::Error,
    },
    /// The HTTP request did not reach the agent; `cause` is the innermost reason.
    #[error("cannot reach the agent at {agent}: {cause}")]
    Unreachable { agent: String, cause: String },
    /// The agent answered, but its body could not be read.
    #[error("read agent response")]
    ReadReply(#[source] reqwest::Error),
    /// The agent answered with a status other than 2xx; `body` is its message, trimmed.
    #[error("Unexpected response code: {code} ({body})")]
    Status { code: u16, body: String },
    /// JSON that did not decode or encode; `what` names the step.
    #[error("{what}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A reply from the agent that is not the JSON the command expects.
    #[error(transparent)]
    Reply(#[from] serde_json::Error),
    /// Reading a local file or stdin failed; `what` names the step.
    #[error("{what}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Writing to stdout or installing a signal handler failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A `kv import` entry without a key.
    #[error("entry {entry}: missing \"key\"")]
    ImportKey { entry: usize },
    /// `join` reached none of the addresses it was given.
    #[error("Failed to join any nodes.")]
    JoinedNone,
    /// A service definition file that could not be read.
    #[error(transparent)]
    Config(#[from] crate::Error),
    /// `lock` could not create the session that holds its lock.
    #[error("create session")]
    CreateSession(#[source] Box<Error>),
    /// `lock -n` could not register its session as a contender for a slot.
    #[error("cannot register as a contender for {0}")]
    Contender(String),
    /// `lock` could not start its child command.
    #[error("cannot start {command:?}: {reason}")]
    Spawn {
        command: String,
        reason: std::io::Error,
    },
    /// `recover` failed on the data dir.
    #[error(transparent)]
    Recover(#[from] muster_server::Error),
}

/// A client command's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A non-2xx answer, with the agent's message as Consul's CLI shows it.
    pub(crate) fn status(code: u16, body: &[u8]) -> Error {
        Error::Status {
            code,
            body: String::from_utf8_lossy(body).trim().to_string(),
        }
    }

    /// Arguments the command cannot work with.
    pub(crate) fn usage(msg: impl Into<String>) -> Error {
        Error::Usage(msg.into())
    }

    /// A refusal, worded as Consul's CLI words it.
    pub(crate) fn refused(msg: impl Into<String>) -> Error {
        Error::Refused(msg.into())
    }

    /// This error as the cause of the step `what` (Consul's wording of it).
    pub(crate) fn context(self, what: impl Into<String>) -> Error {
        Error::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// Whether the message is a whole line as Consul's CLI prints it; other errors are
    /// printed after `Error: `.
    pub(crate) fn is_whole_line(&self) -> bool {
        matches!(
            self,
            Error::Flags(_)
                | Error::Usage(_)
                | Error::UsageHelp(_)
                | Error::Refused(_)
                | Error::Context { .. }
                | Error::InvalidFlag { .. }
                | Error::StatusRegex { .. }
                | Error::JoinedNone
        )
    }

    /// The message and every cause under it, joined by `: `, as the binary prints it.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut cur: &dyn std::error::Error = self;
        while let Some(next) = cur.source() {
            out.push_str(": ");
            out.push_str(&next.to_string());
            cur = next;
        }
        out
    }
}
