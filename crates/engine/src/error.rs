use std::path::PathBuf;

/// Errors an engine reports. Messages say what went wrong and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A host program the engine needs is not installed.
    #[error("`{program}` was not found; install it with `{install}`")]
    NotInstalled { program: String, install: String },

    /// The host program is there but of a version the engine cannot drive.
    #[error("{program} {found} is too old: {needed} is required (install it with `{install}`)")]
    WrongVersion {
        program: String,
        found: String,
        needed: String,
        install: String,
    },

    /// The requested engine or acceleration is not usable on this host.
    #[error("{0}")]
    Unavailable(String),

    /// The machine description cannot be run by this engine.
    #[error("invalid machine configuration: {0}")]
    InvalidSpec(String),

    /// A file the machine needs is missing or unreadable.
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The engine process could not be started.
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// The engine process ended before or while it was being controlled.
    #[error("the engine process exited unexpectedly ({status}){}", stderr_suffix(.stderr))]
    Crashed { status: String, stderr: String },

    /// A writable drive's image is already open for writing by another process (image
    /// locking refused this one): two writers would corrupt it.
    #[error("the drive image {} is already open for writing by {holders}: two writers would corrupt it; stop the other, or make this drive read-only, or give it its own copy", path.display())]
    ImageInUse { path: PathBuf, holders: String },

    /// The engine's control channel failed or refused a command.
    #[error("engine control failed: {0}")]
    Control(String),

    /// The call does not fit the guest's current state (e.g. pause before start).
    #[error("{0}")]
    InvalidState(String),

    /// The engine cannot do this at all.
    #[error("{what} is not supported by the {engine} engine")]
    Unsupported { engine: String, what: String },

    /// Waiting for the engine took longer than allowed.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),

    /// Any other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

impl EngineError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashed_message_includes_stderr_only_when_present() {
        let e = EngineError::Crashed {
            status: "exit status: 1".into(),
            stderr: " boom \n".into(),
        };
        assert_eq!(
            e.to_string(),
            "the engine process exited unexpectedly (exit status: 1): boom"
        );
        let e = EngineError::Crashed {
            status: "signal 9".into(),
            stderr: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "the engine process exited unexpectedly (signal 9)"
        );
    }

    #[test]
    fn io_helper_keeps_context() {
        let e = EngineError::io("reading x", std::io::Error::other("nope"));
        assert_eq!(e.to_string(), "reading x: nope");
    }
}
