use ec1_engine::EngineError;

/// Why a sandbox could not be booted or used.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("guest kernel: {0}")]
    Kernel(#[from] ec1_guest::kernel::KernelError),
    #[error("agent initramfs: {0}")]
    Initramfs(#[from] ec1_guest::initramfs::InitramfsError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("guest architecture: {0}")]
    Arch(String),
    #[error("the guest agent did not answer: {error}{}", console_suffix(.console))]
    Agent {
        error: ec1_client::Error,
        /// The end of the guest's console, which usually says why.
        console: String,
    },
    #[error("the guest could not flush and close its root drive's filesystem before the VM was stopped, so the image may lack what the command wrote (run e2fsck on it): {error}{}", console_suffix(.console))]
    Quiesce {
        error: ec1_client::Error,
        /// The end of the guest's console.
        console: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sandbox options: {0}")]
    Options(String),
    #[error(
        "no warm clone of template {key} is ready: start `ec1 pool` with the same machine \
         options (it keeps clones ready), wait for it to fill, or run without --pool"
    )]
    NoPool { key: String },
}

impl SandboxError {
    /// Wraps an I/O error with what was being done: `.map_err(SandboxError::io("..."))`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
        let context = context.into();
        move |source| SandboxError::Io { context, source }
    }
}

fn console_suffix(console: &str) -> String {
    if console.trim().is_empty() {
        String::new()
    } else {
        format!("\nlast lines of the guest console:\n{}", console.trim_end())
    }
}
