//! Errors of the API layer. Each `Display` is what a client reads in `fault_message`,
//! worded as Firecracker words it wherever Firecracker has a wording.

use std::path::PathBuf;

/// Why a request could not be parsed (path, method or body). Always 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("The ID cannot be empty.")]
    EmptyId,
    #[error("API Resource IDs can only contain alphanumeric characters and underscores.")]
    InvalidId,
    #[error("Invalid request method and/or path: {method} {path}.")]
    InvalidPathMethod { method: String, path: String },
    #[error("An error occurred when deserializing the json body of a request: {0}.")]
    SerdeJson(String),
    #[error("{0}")]
    Generic(String),
    #[error(
        "Request payload with size {size} is larger than the limit of {limit} allowed by server."
    )]
    PayloadTooLarge { size: usize, limit: usize },
}

impl RequestError {
    pub(crate) fn serde(e: serde_json::Error) -> Self {
        RequestError::SerdeJson(e.to_string())
    }
}

/// Why an action on the VM failed (Firecracker's `VmmActionError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmmActionError {
    #[error("The requested operation is not supported before starting the microVM.")]
    OperationNotSupportedPreBoot,
    #[error("The requested operation is not supported after starting the microVM.")]
    OperationNotSupportedPostBoot,
    /// A capability this engine lacks; the text names it.
    #[error("The requested operation is not supported: {0}")]
    NotSupported(String),
    #[error("Boot source error: {0}")]
    BootSource(String),
    #[error("Machine config error: {0}")]
    MachineConfig(String),
    #[error("Configure CPU error: {0}")]
    ConfigureCpu(String),
    #[error("Drive config error: {0}")]
    DriveConfig(String),
    #[error("Network config error: {0}")]
    NetworkConfig(String),
    #[error("Vsock config error: {0}")]
    VsockConfig(String),
    #[error("Balloon config error: {0}")]
    BalloonConfig(String),
    #[error("Entropy device error: {0}")]
    EntropyDevice(String),
    #[error("Pmem device error: {0}")]
    PmemDevice(String),
    #[error("Memory hotplug config error: {0}")]
    MemoryHotplugConfig(String),
    #[error("Serial config error: {0}")]
    SerialConfig(String),
    #[error("Logger error: {0}")]
    Logger(String),
    #[error("Metrics error: {0}")]
    Metrics(String),
    #[error("MMDS error: {0}")]
    Mmds(String),
    #[error("MMDS limit exceeded error: {0}")]
    MmdsLimitExceeded(String),
    #[error("MMDS config error: {0}")]
    MmdsConfig(String),
    #[error("Start microvm error: {0}")]
    StartMicrovm(String),
    #[error("Create snapshot error: {0}")]
    CreateSnapshot(String),
    #[error("Load snapshot error: {0}")]
    LoadSnapshot(String),
    #[error("Internal VMM error: {0}")]
    InternalVmm(String),
}

impl VmmActionError {
    /// The HTTP status Firecracker answers with: 413 for an MMDS store over its limit,
    /// 400 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            VmmActionError::MmdsLimitExceeded(_) => 413,
            _ => 400,
        }
    }
}

/// Why `run` could not run or keep running the microVM. Messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "--no-api needs --config-file: without the API socket nothing could configure the microVM"
    )]
    NoApiWithoutConfig,
    #[error("the API socket path {} already exists: remove it (or pick another --api-sock) and try again", path.display())]
    SocketExists { path: PathBuf },
    #[error("cannot create the API socket {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start ec1's event loop: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot create the run directory {}: {source}", path.display())]
    RunDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid logger configuration: {0}")]
    Logger(String),
    #[error("invalid metrics configuration: {0}")]
    Metrics(String),
    #[error("invalid MMDS metadata file {}: {message}", path.display())]
    Metadata { path: PathBuf, message: String },
    #[error(transparent)]
    Config(#[from] crate::config_file::ConfigFileError),
    #[error("the microVM did not start: {0}")]
    Start(String),
    #[error("the engine running the guest exited unexpectedly ({status}){}", stderr_suffix(.stderr))]
    EngineCrashed { status: String, stderr: String },
}

fn stderr_suffix(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// Firecracker's process exit code for a bad configuration (`FcExitCode::BadConfiguration`).
pub const EXIT_CODE_BAD_CONFIGURATION: i32 = 152;
/// Firecracker's generic failure exit code.
pub const EXIT_CODE_GENERIC_ERROR: i32 = 1;

impl ApiError {
    /// The process exit code Firecracker uses for the same failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            ApiError::NoApiWithoutConfig
            | ApiError::Logger(_)
            | ApiError::Metrics(_)
            | ApiError::Metadata { .. }
            | ApiError::Config(_)
            | ApiError::Start(_) => EXIT_CODE_BAD_CONFIGURATION,
            ApiError::SocketExists { .. }
            | ApiError::Bind { .. }
            | ApiError::Runtime(_)
            | ApiError::RunDir { .. }
            | ApiError::EngineCrashed { .. } => EXIT_CODE_GENERIC_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_messages_match_firecracker() {
        assert_eq!(
            RequestError::InvalidPathMethod {
                method: "GET".into(),
                path: "foo".into()
            }
            .to_string(),
            "Invalid request method and/or path: GET foo."
        );
        assert_eq!(
            VmmActionError::OperationNotSupportedPreBoot.to_string(),
            "The requested operation is not supported before starting the microVM."
        );
        assert_eq!(VmmActionError::MmdsLimitExceeded("x".into()).status(), 413);
        assert_eq!(VmmActionError::Mmds("x".into()).status(), 400);
    }

    #[test]
    fn exit_codes_follow_firecracker() {
        assert_eq!(ApiError::NoApiWithoutConfig.exit_code(), 152);
        let e = ApiError::EngineCrashed {
            status: "signal 9".into(),
            stderr: " oops\n".into(),
        };
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "the engine running the guest exited unexpectedly (signal 9): oops"
        );
        let e = ApiError::EngineCrashed {
            status: "signal 9".into(),
            stderr: String::new(),
        };
        assert!(e.to_string().ends_with("(signal 9)"));
    }
}
