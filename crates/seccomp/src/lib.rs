//! Seccomp filters for ec1's own threads, by the role a thread plays.
//!
//! Firecracker installs a filter per thread kind (VMM, API, vCPU) so that a thread that
//! a guest can drive can make only the system calls its work needs. ec1 runs no vCPU:
//! the engine's process (QEMU) runs the guest, under QEMU's own `-sandbox`. What a
//! guest reaches in the ec1 process are the threads that parse what it writes — the
//! vsock device, the network frame relays, the console log — and those are confined
//! here, each at its start, with [`Role::Device`]. A thread they spawn inherits the
//! filter.
//!
//! A system call outside a filter is trapped: ec1 writes which call and which thread
//! to stderr and exits with Firecracker's code for a bad system call (148), as
//! Firecracker's SIGSYS handler does. `--no-seccomp` turns the filters off
//! ([`disable`]).

mod rules;
mod sigsys;

use std::sync::atomic::{AtomicBool, Ordering};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

pub use rules::Role;

/// Firecracker's exit code for a system call its filters refused.
pub const BAD_SYSCALL_EXIT: i32 = 148;

static DISABLED: AtomicBool = AtomicBool::new(false);

/// Why a filter could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("this architecture ({0}) has no seccomp filter in ec1")]
    Arch(&'static str),
    #[error("building the {role} seccomp filter: {msg}")]
    Build { role: &'static str, msg: String },
    #[error(
        "installing the {role} seccomp filter: {msg} (the kernel needs CONFIG_SECCOMP_FILTER; --no-seccomp runs without filters)"
    )]
    Install { role: &'static str, msg: String },
}

/// Turns the filters off for this process (`--no-seccomp`): [`confine`] then does
/// nothing.
pub fn disable() {
    DISABLED.store(true, Ordering::SeqCst);
}

/// Whether [`confine`] installs filters.
pub fn enabled() -> bool {
    !DISABLED.load(Ordering::SeqCst)
}

/// Confines the calling thread (and the threads it spawns afterwards) to `role`'s
/// system calls, unless filters are [`disable`]d. Irreversible for the thread.
pub fn confine(role: Role) -> Result<(), SeccompError> {
    if !enabled() {
        return Ok(());
    }
    let programs = compile(role)?;
    sigsys::install_handler();
    for p in &programs {
        seccompiler::apply_filter(p).map_err(|e| SeccompError::Install {
            role: role.name(),
            msg: e.to_string(),
        })?;
    }
    Ok(())
}

/// `role`'s filters as BPF for this machine's architecture, in the order they are
/// installed: the calls answered with an error, then the allow-list (anything else
/// traps; installing a filter takes calls the allow-list does not have, so it comes
/// last).
pub fn compile(role: Role) -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))?;
    let build = |msg: String| SeccompError::Build {
        role: role.name(),
        msg,
    };
    let program = |rules, mismatch, matched| -> Result<BpfProgram, SeccompError> {
        let filter =
            SeccompFilter::new(rules, mismatch, matched, arch).map_err(|e| build(e.to_string()))?;
        filter
            .try_into()
            .map_err(|e: seccompiler::BackendError| build(e.to_string()))
    };
    let mut programs = Vec::new();
    for (rules, errno) in rules::errors() {
        programs.push(program(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
        )?);
    }
    programs.push(program(
        role.rules(),
        SeccompAction::Trap,
        SeccompAction::Allow,
    )?);
    Ok(programs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_compiles_for_this_machine() {
        for role in Role::ALL {
            let p = compile(role).unwrap();
            assert_eq!(p.len(), 3);
            assert!(
                p[2].len() > 10,
                "{}: {} instructions",
                role.name(),
                p[2].len()
            );
        }
    }

    /// Runs `confined_child` in a child process (a refused call ends the whole
    /// process) with `action` as what the confined thread tries last.
    fn confined_child_doing(action: &str) -> std::process::Output {
        let exe = std::env::current_exe().unwrap();
        std::process::Command::new(exe)
            .args([
                "--exact",
                "tests::confined_child",
                "--nocapture",
                "--ignored",
            ])
            .env("EC1_SECCOMP_CHILD", action)
            .output()
            .unwrap()
    }

    #[test]
    fn a_confined_thread_keeps_working_and_cannot_unlink_files() {
        let out = confined_child_doing("unlink");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(BAD_SYSCALL_EXIT), "{stderr}");
        assert!(stderr.contains("worked before"), "{stderr}");
        assert!(stderr.contains("open refused"), "{stderr}");
        assert!(
            stderr.contains("seccomp: the device filter refused system call")
                && stderr.contains("in thread ec1-test-device"),
            "{stderr}"
        );
        assert!(!stderr.contains("not reached"), "{stderr}");
    }

    #[test]
    fn a_confined_thread_cannot_map_executable_memory() {
        let out = confined_child_doing("exec-map");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(BAD_SYSCALL_EXIT), "{stderr}");
        assert!(stderr.contains("worked before"), "{stderr}");
        assert!(
            stderr.contains(&format!("refused system call {}", libc::SYS_mmap)),
            "{stderr}"
        );
        assert!(!stderr.contains("not reached"), "{stderr}");
    }

    #[test]
    fn a_confined_thread_cannot_start_programs() {
        use std::os::unix::process::ExitStatusExt;
        // posix_spawn blocks every signal around its clone, so the kernel delivers the
        // SIGSYS with its default action: the process ends, without a message.
        let out = confined_child_doing("spawn");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("worked before"), "{stderr}");
        assert!(
            out.status.signal() == Some(libc::SIGSYS)
                || out.status.code() == Some(BAD_SYSCALL_EXIT),
            "{:?} {stderr}",
            out.status
        );
        assert!(!stderr.contains("not reached"), "{stderr}");
    }

    /// Run by the tests above in a child process.
    #[test]
    #[ignore = "run in a child process by the tests above"]
    fn confined_child() {
        let Some(action) = std::env::var_os("EC1_SECCOMP_CHILD") else {
            return;
        };
        std::thread::Builder::new()
            .name("ec1-test-device".into())
            .spawn(move || {
                confine(Role::Device).unwrap();
                // What a device thread does: allocate, talk over sockets, spawn a helper.
                let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
                use std::io::{Read, Write};
                let h = std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 20];
                    b.read_exact(&mut buf).unwrap();
                    buf.len()
                });
                a.write_all(&vec![7u8; 1 << 20]).unwrap();
                assert_eq!(h.join().unwrap(), 1 << 20);
                eprintln!("worked before");
                // What it never does: map executable memory, open or remove a file,
                // start a program.
                if action == "exec-map" {
                    // SAFETY: an anonymous mapping request, refused before it exists.
                    let p = unsafe {
                        libc::mmap(
                            std::ptr::null_mut(),
                            4096,
                            libc::PROT_READ | libc::PROT_EXEC,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                            -1,
                            0,
                        )
                    };
                    eprintln!("not reached: mapped {p:?}");
                }
                let open = std::fs::File::open("/etc/hostname").map(drop);
                assert_eq!(
                    open.unwrap_err().kind(),
                    std::io::ErrorKind::PermissionDenied
                );
                eprintln!("open refused");
                if action == "unlink" {
                    let _ = std::fs::remove_file("/nonexistent/ec1-seccomp-test");
                } else {
                    let _ = std::process::Command::new("/bin/true").status();
                }
                eprintln!("not reached");
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn disabled_filters_install_nothing() {
        // Only this test touches the switch in this process, in a child to keep it
        // from the other tests.
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "tests::disabled_child",
                "--nocapture",
                "--ignored",
            ])
            .env("EC1_SECCOMP_CHILD", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("ran /bin/true"), "{stderr}");
    }

    #[test]
    #[ignore = "run in a child process by disabled_filters_install_nothing"]
    fn disabled_child() {
        if std::env::var_os("EC1_SECCOMP_CHILD").is_none() {
            return;
        }
        disable();
        assert!(!enabled());
        std::thread::spawn(|| {
            confine(Role::Device).unwrap();
            let s = std::process::Command::new("/bin/true").status().unwrap();
            assert!(s.success());
            eprintln!("ran /bin/true");
        })
        .join()
        .unwrap();
    }
}
