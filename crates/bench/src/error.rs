//! Why a benchmark could not run or report. Every message says what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid bench options: {0}")]
    Usage(String),
    #[error("booting the sandbox: {0}")]
    Sandbox(#[from] ec1_sandbox::SandboxError),
    #[error("the guest agent failed: {0}")]
    Agent(#[from] ec1_client::Error),
    #[error("engine: {0}")]
    Engine(#[from] ec1_engine::EngineError),
    #[error("guest kernel: {0}")]
    Kernel(#[from] ec1_guest::kernel::KernelError),
    #[error("agent initramfs: {0}")]
    Initramfs(#[from] ec1_guest::initramfs::InitramfsError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] crate::http::HttpError),
    #[error("{what} did not happen within {waited_ms} ms{}", hint_suffix(.hint))]
    Timeout {
        what: String,
        waited_ms: u128,
        hint: String,
    },
    #[error("{program} failed: {why}{}", hint_suffix(.output))]
    Process {
        program: String,
        why: String,
        /// The end of its stderr / console, which usually says why.
        output: String,
    },
    #[error("the guest answered wrongly: {0}")]
    Guest(String),
    #[error("no measurement in {0}: every run failed or none was asked for")]
    NoData(String),
    #[error("writing the SVG {path}: {why}")]
    Svg { path: PathBuf, why: String },
    #[error(
        "cannot find the ec1 binary to drive ({why}): pass --ec1 PATH (e.g. ./target/release/ec1)"
    )]
    Ec1NotFound { why: String },
}

fn hint_suffix(s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!("\n{}", s.trim_end())
    }
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let context = context.into();
        move |source| BenchError::Io { context, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = BenchError::Timeout {
            what: "the API socket".into(),
            waited_ms: 10,
            hint: "stderr: boom".into(),
        };
        assert_eq!(
            e.to_string(),
            "the API socket did not happen within 10 ms\nstderr: boom"
        );
        let e = BenchError::Process {
            program: "x".into(),
            why: "exit 1".into(),
            output: " ".into(),
        };
        assert_eq!(e.to_string(), "x failed: exit 1");
        assert!(BenchError::Ec1NotFound { why: "w".into() }
            .to_string()
            .contains("--ec1"));
        let e = BenchError::io("reading x")(std::io::Error::other("nope"));
        assert_eq!(e.to_string(), "reading x: nope");
    }
}
