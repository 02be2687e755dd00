//! Errors of the host side, each saying what to do about it.

use ec1_proto::ErrorCode;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent socket could not be connected within the allowed time.
    #[error(
        "cannot connect to the agent socket {path} within {waited:?}: {source} \
         (is the VM running, and was it started with an agent socket?)"
    )]
    Connect {
        path: PathBuf,
        waited: Duration,
        #[source]
        source: std::io::Error,
    },

    /// The guest agent did not answer the hello in time.
    #[error(
        "the guest agent did not announce itself within {0:?}: the guest may still be booting, \
         or it does not run ec1's agent (check the guest console for `ec1-agent:` lines)"
    )]
    ReadyTimeout(Duration),

    /// Host and agent share no protocol version.
    #[error("incompatible guest agent: {0}")]
    Version(String),

    /// The channel to the agent is gone; every session on it failed.
    #[error("the connection to the guest agent is closed: {0}")]
    Disconnected(String),

    /// The agent broke the protocol on this session (an end that does not fit it).
    #[error("the guest agent broke the protocol: {0}")]
    Protocol(String),

    /// The agent lost the frame boundaries and dropped every session.
    #[error("the guest agent reset the channel: {0}")]
    ChannelReset(String),

    /// The agent reported a failure of this session.
    #[error("guest: {message}")]
    Remote { code: ErrorCode, message: String },

    /// A wait took longer than allowed.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),

    /// A local file operation failed.
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Another I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The agent's error code, for errors the agent reported.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// An `io::Error` carrying this error, for `Read`/`Write` implementations.
    pub(crate) fn into_io(self) -> std::io::Error {
        let kind = match &self {
            Error::Disconnected(_) | Error::ChannelReset(_) => std::io::ErrorKind::BrokenPipe,
            Error::Timeout(..) => std::io::ErrorKind::TimedOut,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, self)
    }
}

/// Short for `Result<T, ec1_client::Error>`.
pub type Result<T> = std::result::Result<T, Error>;
