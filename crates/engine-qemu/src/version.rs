//! Finding `qemu-system-x86_64` (or `qemu-system-aarch64`) and checking that it is new
//! enough.

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ec1_engine::{Arch, EngineError};

/// The QEMU program the engine runs for x86_64 guests unless told otherwise (looked up
/// in `PATH`).
pub const QEMU_PROGRAM: &str = "qemu-system-x86_64";
/// The QEMU program for aarch64 guests.
pub const QEMU_PROGRAM_AARCH64: &str = "qemu-system-aarch64";

/// The environment variable that overrides the x86_64 QEMU binary's path.
pub const BINARY_ENV: &str = "EC1_QEMU";
/// The environment variable that overrides the aarch64 QEMU binary's path.
pub const BINARY_ENV_AARCH64: &str = "EC1_QEMU_AARCH64";

/// How a user gets a suitable QEMU on Debian 12 (the backports carry QEMU 10).
pub const INSTALL_COMMAND: &str = "apt-get install -t bookworm-backports qemu-system-x86";
/// The same for the aarch64 emulator.
pub const INSTALL_COMMAND_AARCH64: &str = "apt-get install -t bookworm-backports qemu-system-arm";

/// How to install the QEMU `binary` names (by its file name).
pub fn install_command_for(binary: &Path) -> &'static str {
    let name = binary.file_name().unwrap_or_default().to_string_lossy();
    if name.contains("aarch64") || name.contains("arm") {
        INSTALL_COMMAND_AARCH64
    } else {
        INSTALL_COMMAND
    }
}

/// The oldest QEMU major version the engine drives: it relies on `microvm` options,
/// `blockdev-reopen` and the QMP schema of QEMU 10.
pub const MIN_MAJOR: u32 = 10;

/// How long `qemu-system-x86_64 --version` may take before it counts as broken.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// A QEMU version, e.g. `10.0.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// Parses the output of `qemu-system-x86_64 --version`
/// (`QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)`).
pub(crate) fn parse_version(output: &str) -> Option<QemuVersion> {
    let rest = &output[output.find("version ")? + "version ".len()..];
    let word = rest.split_whitespace().next()?;
    let mut parts = word.split('.').map(|p| {
        // Tolerate suffixes such as `10.1.0-rc2` or `9.2.50`: keep the leading digits.
        let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let micro = parts.next().flatten().unwrap_or(0);
    Some(QemuVersion {
        major,
        minor,
        micro,
    })
}

/// The QEMU binary to run `arch` guests: `explicit` if given, else `$EC1_QEMU`
/// (`$EC1_QEMU_AARCH64`), else `qemu-system-x86_64` (`qemu-system-aarch64`) from
/// `PATH`.
pub fn resolve_binary(explicit: Option<&Path>, arch: Arch) -> PathBuf {
    let env = match arch {
        Arch::X86_64 => BINARY_ENV,
        Arch::Aarch64 => BINARY_ENV_AARCH64,
    };
    resolve_binary_from(explicit, std::env::var_os(env), arch)
}

fn resolve_binary_from(explicit: Option<&Path>, env: Option<OsString>, arch: Arch) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match env {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(match arch {
            Arch::X86_64 => QEMU_PROGRAM,
            Arch::Aarch64 => QEMU_PROGRAM_AARCH64,
        }),
    }
}

/// Checks that `binary` runs and is QEMU [`MIN_MAJOR`] or newer.
///
/// Fails with [`EngineError::NotInstalled`] (naming the install command) when it does
/// not exist, and [`EngineError::WrongVersion`] when it is too old or unrecognisable.
pub fn check_qemu(binary: &Path) -> Result<QemuVersion, EngineError> {
    let program = binary.display().to_string();
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                EngineError::NotInstalled {
                    program: program.clone(),
                    install: install_command_for(binary).into(),
                }
            } else {
                EngineError::Spawn {
                    program: program.clone(),
                    source,
                }
            }
        })?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(EngineError::Timeout(
                    VERSION_TIMEOUT,
                    format!("`{program} --version`"),
                ));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(EngineError::io(
                    format!("waiting for `{program} --version`"),
                    e,
                ));
            }
        }
    };
    // The output is a few hundred bytes: it fit in the pipe, so reading after the exit
    // cannot block.
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(EngineError::Crashed {
            status: format!("`{program} --version`: {status}"),
            stderr: err,
        });
    }
    check_version_output(&program, &out)
}

/// Judges `--version` output: parsed and at least [`MIN_MAJOR`].
fn check_version_output(program: &str, out: &str) -> Result<QemuVersion, EngineError> {
    let wrong = |found: String| EngineError::WrongVersion {
        program: program.to_string(),
        found,
        needed: format!("QEMU {MIN_MAJOR}.0 or newer"),
        install: install_command_for(Path::new(program)).into(),
    };
    let first_line = out.lines().next().unwrap_or("").trim().to_string();
    let version = parse_version(out).ok_or_else(|| {
        wrong(if first_line.is_empty() {
            "(no version output)".into()
        } else {
            format!("{first_line:?} (unrecognised)")
        })
    })?;
    if version.major < MIN_MAJOR {
        return Err(wrong(version.to_string()));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_and_plain_versions() {
        let v = parse_version(
            "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright",
        )
        .unwrap();
        assert_eq!(
            v,
            QemuVersion {
                major: 10,
                minor: 0,
                micro: 2
            }
        );
        assert_eq!(v.to_string(), "10.0.2");
        assert_eq!(
            parse_version("QEMU emulator version 7.2.15\n"),
            Some(QemuVersion {
                major: 7,
                minor: 2,
                micro: 15
            })
        );
        assert_eq!(
            parse_version("QEMU emulator version 10.1.0-rc2"),
            Some(QemuVersion {
                major: 10,
                minor: 1,
                micro: 0
            })
        );
        assert_eq!(
            parse_version("QEMU emulator version 11"),
            Some(QemuVersion {
                major: 11,
                minor: 0,
                micro: 0
            })
        );
        assert_eq!(parse_version("something else"), None);
        assert_eq!(parse_version("version x.y"), None);
        assert_eq!(parse_version("version "), None);
    }

    #[test]
    fn versions_order_numerically() {
        let v = |s| parse_version(s).unwrap();
        assert!(v("version 10.0.0") > v("version 9.2.50"));
        assert!(v("version 10.10.0") > v("version 10.9.9"));
    }

    #[test]
    fn old_or_unknown_versions_are_rejected_with_the_install_command() {
        let e = check_version_output("qemu", "QEMU emulator version 7.2.15\n").unwrap_err();
        assert!(matches!(e, EngineError::WrongVersion { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("7.2.15"), "{msg}");
        assert!(msg.contains(INSTALL_COMMAND), "{msg}");
        let e = check_version_output("qemu", "").unwrap_err();
        assert!(e.to_string().contains("no version output"), "{e}");
        let e = check_version_output("qemu", "hello\n").unwrap_err();
        assert!(e.to_string().contains("unrecognised"), "{e}");
        assert_eq!(
            check_version_output("qemu", "QEMU emulator version 10.0.2").unwrap(),
            QemuVersion {
                major: 10,
                minor: 0,
                micro: 2
            }
        );
    }

    #[test]
    fn binary_resolution_prefers_explicit_then_env() {
        let p = Path::new("/opt/q");
        let x = Arch::X86_64;
        assert_eq!(
            resolve_binary_from(Some(p), Some("/env/q".into()), x),
            PathBuf::from("/opt/q")
        );
        assert_eq!(
            resolve_binary_from(None, Some("/env/q".into()), x),
            PathBuf::from("/env/q")
        );
        assert_eq!(
            resolve_binary_from(None, Some("".into()), x),
            PathBuf::from(QEMU_PROGRAM)
        );
        assert_eq!(
            resolve_binary_from(None, None, x),
            PathBuf::from(QEMU_PROGRAM)
        );
        assert_eq!(
            resolve_binary_from(None, None, Arch::Aarch64),
            PathBuf::from(QEMU_PROGRAM_AARCH64)
        );
        assert_eq!(
            install_command_for(Path::new("/usr/bin/qemu-system-aarch64")),
            INSTALL_COMMAND_AARCH64
        );
        assert_eq!(
            install_command_for(Path::new("qemu-system-x86_64")),
            INSTALL_COMMAND
        );
    }

    #[test]
    fn missing_binary_is_not_installed() {
        let e = check_qemu(Path::new("/nonexistent/ec1/qemu-system-x86_64")).unwrap_err();
        match &e {
            EngineError::NotInstalled { program, install } => {
                assert!(program.contains("/nonexistent/ec1"));
                assert_eq!(install, INSTALL_COMMAND);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(e
            .to_string()
            .contains("apt-get install -t bookworm-backports"));
    }

    /// Runs `check_qemu` on a script just written. Another test thread forking at the
    /// same moment can briefly hold the script's write descriptor (`ETXTBSY`): retry.
    fn check_fresh_script(p: &Path) -> EngineError {
        for _ in 0..100 {
            match check_qemu(p) {
                Err(EngineError::Spawn { source, .. })
                    if source.raw_os_error() == Some(libc::ETXTBSY) =>
                {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return e,
                Ok(v) => panic!("{} unexpectedly accepted as {v}", p.display()),
            }
        }
        panic!("{} stayed busy", p.display())
    }

    #[test]
    fn failing_or_old_binaries_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let fail = dir.path().join("fail");
        std::fs::write(&fail, "#!/bin/sh\necho broken >&2\nexit 3\n").unwrap();
        let old = dir.path().join("old");
        std::fs::write(&old, "#!/bin/sh\necho 'QEMU emulator version 8.2.2'\n").unwrap();
        for p in [&fail, &old] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let e = check_fresh_script(&fail);
        assert!(e.to_string().contains("broken"), "{e}");
        let e = check_fresh_script(&old);
        assert!(matches!(e, EngineError::WrongVersion { .. }), "{e:?}");
        // A directory cannot be executed: a spawn error, not "not installed".
        let e = check_qemu(dir.path()).unwrap_err();
        assert!(matches!(e, EngineError::Spawn { .. }), "{e:?}");
    }

    #[test]
    fn installed_qemu_is_accepted() {
        // The machine this project runs on has QEMU 10 (see the crate docs).
        let v = check_qemu(&resolve_binary(None, Arch::X86_64)).unwrap();
        assert!(v.major >= MIN_MAJOR);
    }
}
