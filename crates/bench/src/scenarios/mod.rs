//! The scenarios `ec1 bench` measures, one per file.

pub mod api;
pub mod api_compare;
pub mod cold;
pub mod density;
pub mod exec;
pub mod pool;
pub mod stream;
pub mod template;

use crate::args::BenchArgs;
use ec1_sandbox::SandboxOptions;

/// The sandbox every guest scenario boots: the defaults of `ec1 run`, plus the
/// kernel and extra boot arguments under test.
pub fn sandbox_options(args: &BenchArgs) -> SandboxOptions {
    SandboxOptions {
        kernel: args.kernel.clone(),
        mem_mib: args.mem,
        arch: args.arch,
        extra_boot_args: args.boot_args.clone(),
        ..SandboxOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Scenario;
    use std::path::PathBuf;

    #[test]
    fn options_carry_kernel_and_boot_args() {
        let args = BenchArgs {
            scenario: Scenario::Cold,
            runs: None,
            warmup: 1,
            json: None,
            svg: None,
            baseline_qemu: false,
            compare: None,
            kernel: Some("/k".into()),
            arch: None,
            boot_args: vec!["lpj=1".into()],
            ec1: None,
            stream_mib: 64,
            pool: false,
            mem: 256,
            lean: false,
            quiet: true,
        };
        let o = sandbox_options(&args);
        assert_eq!(o.kernel, Some(PathBuf::from("/k")));
        assert_eq!(o.extra_boot_args, ["lpj=1"]);
        assert_eq!(o.mem_mib, SandboxOptions::default().mem_mib);
    }
}
