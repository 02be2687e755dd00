//! `ec1 kernel build|path`.

use crate::args::KernelAction;

/// Runs a kernel subcommand; progress goes to stderr, the path to stdout (last line).
pub fn run(action: KernelAction) -> i32 {
    let result = match action {
        KernelAction::Build { arch } => {
            ec1_guest::kernel::build(arch, &mut |line| eprintln!("[ec1 kernel] {line}"))
        }
        KernelAction::Path { arch } => ec1_guest::kernel::path(arch),
    };
    match result {
        Ok(path) => {
            let abs = std::fs::canonicalize(&path).unwrap_or(path);
            println!("{}", abs.display());
            0
        }
        Err(e) => {
            eprintln!("ec1: {e}");
            1
        }
    }
}
