//! The default guest kernels: Linux 6.1 from Debian's `linux-source-6.1` with ec1's
//! patches (`kernel/patches/`), configured as `make tinyconfig` plus ec1's fragments
//! (`kernel/ec1-guest.config` and the architecture's `kernel/ec1-guest-<arch>.config`),
//! built once per architecture (arm64 cross-compiled with Debian's
//! `gcc-aarch64-linux-gnu`) and cached under [`cache::cache_root`] keyed by the
//! fragments, the patches, the source version and the architecture.

pub mod cache;
pub mod fragment;
mod host;
pub mod patches;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ec1_engine::Arch;

pub use cache::{cache_root, kernel_key, KernelPaths};

/// ec1's kernel config fragment for every architecture, applied on top of
/// `make tinyconfig`.
pub const FRAGMENT: &str = include_str!("../../../../kernel/ec1-guest.config");
/// The x86_64 fragment, applied after [`FRAGMENT`].
pub const FRAGMENT_X86_64: &str = include_str!("../../../../kernel/ec1-guest-x86_64.config");
/// The aarch64 fragment, applied after [`FRAGMENT`].
pub const FRAGMENT_AARCH64: &str = include_str!("../../../../kernel/ec1-guest-aarch64.config");

/// The whole fragment for `arch`: the common one, then the architecture's.
pub fn fragment_for(arch: Arch) -> String {
    let own = match arch {
        Arch::X86_64 => FRAGMENT_X86_64,
        Arch::Aarch64 => FRAGMENT_AARCH64,
    };
    format!("{FRAGMENT}\n{own}")
}

/// How `make` is told to build for `arch` on this host, and what it builds.
struct Toolchain {
    /// `ARCH=` and `CROSS_COMPILE=` (empty for a native build).
    make_vars: Vec<String>,
    /// The make target and the file it leaves, relative to the source tree.
    target: &'static str,
    image: &'static str,
    /// The packages a cross build needs beyond [`BUILD_PACKAGES`].
    packages: &'static [&'static str],
}

fn toolchain(arch: Arch) -> Toolchain {
    let native = arch == Arch::host();
    match arch {
        // The uncompressed ELF: QEMU boots it through its PVH note.
        Arch::X86_64 => Toolchain {
            make_vars: if native {
                Vec::new()
            } else {
                vec![
                    "ARCH=x86_64".into(),
                    "CROSS_COMPILE=x86_64-linux-gnu-".into(),
                ]
            },
            target: "vmlinux",
            image: "vmlinux",
            packages: if native {
                &[]
            } else {
                &["gcc-x86-64-linux-gnu"]
            },
        },
        // The `Image` boot format arm64 boot loaders (QEMU's, VZ's) load.
        Arch::Aarch64 => Toolchain {
            make_vars: if native {
                Vec::new()
            } else {
                vec![
                    "ARCH=arm64".into(),
                    "CROSS_COMPILE=aarch64-linux-gnu-".into(),
                ]
            },
            target: "Image",
            image: "arch/arm64/boot/Image",
            packages: if native {
                &[]
            } else {
                &["gcc-aarch64-linux-gnu"]
            },
        },
    }
}
/// The Debian package the kernel source comes from.
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";
/// Where that package puts its tarball.
pub const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
/// Debian packages the build needs.
pub const BUILD_PACKAGES: &[&str] = &[
    SOURCE_PACKAGE,
    "build-essential",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "xz-utils",
    "patch",
];

/// Why the kernel could not be found or built.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("no cache directory: set XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    #[error(
        "the default {0} kernel is not built yet: run `ec1 kernel build --arch {0}` (about 4 minutes on 2 cores)"
    )]
    NotBuilt(Arch),
    #[error("{package} is not installed, so the kernel source version is unknown: run `ec1 kernel build`, which installs it")]
    SourceNotInstalled { package: String },
    #[error("installing {packages} failed: {detail} (run `apt-get install {packages}` as root)")]
    Install { packages: String, detail: String },
    #[error("`{command}` failed ({status}):\n{tail}")]
    Command {
        command: String,
        status: String,
        tail: String,
    },
    #[error("kernel options from the fragment did not survive `make olddefconfig`: {}", .0.join("; "))]
    OptionsDropped(Vec<String>),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> KernelError {
    let context = context.into();
    move |source| KernelError::Io { context, source }
}

/// The cached kernel's paths for `arch` and the installed source version, built or not.
pub fn expected_paths(arch: Arch) -> Result<KernelPaths, KernelError> {
    let cache = cache_root().ok_or(KernelError::NoCacheDir)?;
    let version = host::source_version(&cache, SOURCE_PACKAGE, Path::new(SOURCE_TARBALL))
        .ok_or_else(|| KernelError::SourceNotInstalled {
            package: SOURCE_PACKAGE.into(),
        })?;
    Ok(KernelPaths::new(
        &cache,
        &kernel_key(
            &fragment_for(arch),
            &patches::digest(patches::PATCHES),
            &version,
            arch,
        ),
        arch,
    ))
}

/// The built default kernel for `arch`, or [`KernelError::NotBuilt`] saying how to
/// build it.
pub fn path(arch: Arch) -> Result<PathBuf, KernelError> {
    let paths = expected_paths(arch)?;
    if paths.image.is_file() {
        Ok(paths.image)
    } else {
        Err(KernelError::NotBuilt(arch))
    }
}

/// Builds the default kernel for `arch` if the cache does not have it and returns its
/// path. `progress` receives human-readable status lines while the build runs.
pub fn build(arch: Arch, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, KernelError> {
    let tools = toolchain(arch);
    let mut packages = BUILD_PACKAGES.to_vec();
    packages.extend_from_slice(tools.packages);
    host::ensure_packages(&packages, progress)?;
    if arch != Arch::host() {
        // The guest's shell and tools come with its kernel.
        let cache = cache_root().ok_or(KernelError::NoCacheDir)?;
        crate::busybox::ensure_foreign(&cache, arch, progress)?;
    }
    let paths = expected_paths(arch)?;
    if paths.image.is_file() {
        return Ok(paths.image);
    }
    let cache = cache_root().ok_or(KernelError::NoCacheDir)?;
    let version = host::package_version(SOURCE_PACKAGE).unwrap_or_default();
    std::fs::create_dir_all(cache.join("kernel")).map_err(io("creating the kernel cache"))?;
    // Two builds of the same tree at once would corrupt it: serialise them.
    let _lock = crate::lock::FileLock::exclusive(&cache.join("kernel").join(".build.lock"))
        .map_err(io("locking the kernel cache"))?;
    if paths.image.is_file() {
        return Ok(paths.image); // another process built it while we waited
    }
    let src = unpack_source(&cache::build_tree(&cache, &version, arch), progress)?;
    patch_source(&src, progress)?;
    configure(&src, &tools, &fragment_for(arch), progress)?;
    compile(&src, &tools, progress)?;
    install(&src, &tools, &paths)?;
    progress(&format!("kernel ready: {}", paths.image.display()));
    Ok(paths.image)
}

fn unpack_source(tree: &Path, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, KernelError> {
    let src = tree.join("linux-source-6.1");
    if src.join("Makefile").is_file() {
        return Ok(src);
    }
    progress(&format!(
        "unpacking {SOURCE_TARBALL} into {}",
        tree.display()
    ));
    let partial = tree.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(io("creating the build tree"))?;
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(SOURCE_TARBALL)
            .arg("-C")
            .arg(&partial),
        "tar -xf linux-source-6.1.tar.xz",
    )?;
    let _ = std::fs::remove_dir_all(tree);
    std::fs::rename(&partial, tree).map_err(io("moving the unpacked source into place"))?;
    Ok(src)
}

fn patch_source(src: &Path, progress: &mut dyn FnMut(&str)) -> Result<(), KernelError> {
    use patches::{TreeState, PATCHES};
    let from = match patches::tree_state(src, PATCHES) {
        TreeState::Patched => return Ok(()),
        TreeState::Pristine => 0,
        TreeState::Partly(n) => n,
        TreeState::Stale => {
            // Another patch set is applied: start again from the tarball.
            let tree = src.parent().unwrap_or(src).to_path_buf();
            std::fs::remove_dir_all(&tree).map_err(io("removing the stale build tree"))?;
            unpack_source(&tree, progress)?;
            0
        }
    };
    progress(&format!(
        "applying {} patch(es) from kernel/patches",
        PATCHES.len() - from
    ));
    patches::apply(src, PATCHES, from)
}

fn configure(
    src: &Path,
    tools: &Toolchain,
    fragment: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(), KernelError> {
    progress("configuring: make tinyconfig + ec1 fragment + olddefconfig");
    run(make(src, tools).arg("tinyconfig"), "make tinyconfig")?;
    let frag = src.join("ec1-guest.config");
    std::fs::write(&frag, fragment).map_err(io("writing the config fragment"))?;
    run(
        Command::new("scripts/kconfig/merge_config.sh")
            .current_dir(src)
            .envs(tools.make_vars.iter().filter_map(|v| v.split_once('=')))
            .args(["-m", ".config", "ec1-guest.config"]),
        "scripts/kconfig/merge_config.sh -m .config ec1-guest.config",
    )?;
    run(make(src, tools).arg("olddefconfig"), "make olddefconfig")?;
    let final_config =
        std::fs::read_to_string(src.join(".config")).map_err(io("reading the final .config"))?;
    let missing = fragment::missing(&fragment::parse(fragment), &final_config);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(KernelError::OptionsDropped(missing))
    }
}

fn compile(
    src: &Path,
    tools: &Toolchain,
    progress: &mut dyn FnMut(&str),
) -> Result<(), KernelError> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    progress(&format!(
        "compiling {} with {jobs} jobs (about 4 minutes on 2 cores)",
        tools.target
    ));
    let mut child = make(src, tools)
        .arg(format!("-j{jobs}"))
        .arg(tools.target)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("starting make"))?;
    let stderr = child.stderr.take();
    let err_thread = std::thread::spawn(move || {
        let mut tail = Vec::new();
        if let Some(e) = stderr {
            for line in BufReader::new(e).lines().map_while(Result::ok) {
                push_tail(&mut tail, line);
            }
        }
        tail
    });
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut units = 0usize;
    let mut tail = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.trim_start().starts_with("CC") || line.trim_start().starts_with("AS") {
                units += 1;
            }
            if last_report.elapsed() >= Duration::from_secs(5) {
                progress(&format!(
                    "  {units} files compiled, {}s elapsed",
                    started.elapsed().as_secs()
                ));
                last_report = Instant::now();
            }
            push_tail(&mut tail, line);
        }
    }
    let status = child.wait().map_err(io("waiting for make"))?;
    let mut err_tail = err_thread.join().unwrap_or_default();
    if status.success() {
        progress(&format!(
            "  compiled {units} files in {}s",
            started.elapsed().as_secs()
        ));
        return Ok(());
    }
    tail.append(&mut err_tail);
    Err(KernelError::Command {
        command: format!("make -j{jobs} {}", tools.target),
        status: status.to_string(),
        tail: tail.join("\n"),
    })
}

fn install(src: &Path, tools: &Toolchain, paths: &KernelPaths) -> Result<(), KernelError> {
    std::fs::create_dir_all(&paths.dir).map_err(io("creating the kernel cache entry"))?;
    // Copy then rename: a reader never sees a half-written kernel.
    let tmp = paths.dir.join("image.partial");
    std::fs::copy(src.join(tools.image), &tmp)
        .map_err(io(format!("copying {} into the cache", tools.image)))?;
    std::fs::copy(src.join(".config"), &paths.config).map_err(io("copying .config"))?;
    std::fs::rename(&tmp, &paths.image).map_err(io("moving the kernel into place"))
}

fn make(src: &Path, tools: &Toolchain) -> Command {
    let mut c = Command::new("make");
    c.current_dir(src).args(&tools.make_vars);
    c
}

const TAIL_LINES: usize = 30;

fn push_tail(tail: &mut Vec<String>, line: String) {
    if tail.len() == TAIL_LINES {
        tail.remove(0);
    }
    tail.push(line);
}

/// Runs a short command, capturing its output for the error message; returns its
/// standard output.
pub(crate) fn run(cmd: &mut Command, shown: &str) -> Result<String, KernelError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("starting `{shown}`")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    Err(KernelError::Command {
        command: shown.to_string(),
        status: out.status.to_string(),
        tail: lines[start..].join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        let mut t = Vec::new();
        for i in 0..100 {
            push_tail(&mut t, i.to_string());
        }
        assert_eq!(t.len(), TAIL_LINES);
        assert_eq!(t.first().map(String::as_str), Some("70"));
        assert_eq!(t.last().map(String::as_str), Some("99"));
    }

    #[test]
    fn run_reports_failing_command_with_its_output() {
        let err = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            "sh -c ...",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`sh -c ...` failed"), "{msg}");
        assert!(msg.contains("out") && msg.contains("err"), "{msg}");
        assert!(run(&mut Command::new("true"), "true").is_ok());
        assert!(matches!(
            run(&mut Command::new("/nonexistent/ec1-x"), "x"),
            Err(KernelError::Io { .. })
        ));
    }

    #[test]
    fn fragments_are_embedded_per_architecture() {
        assert!(FRAGMENT.contains("CONFIG_VIRTIO_CONSOLE=y"));
        let x86 = fragment_for(Arch::X86_64);
        let arm = fragment_for(Arch::Aarch64);
        assert!(x86.contains("CONFIG_VIRTIO_CONSOLE=y") && x86.contains("CONFIG_SERIAL_8250=y"));
        assert!(
            arm.contains("CONFIG_VIRTIO_CONSOLE=y") && arm.contains("CONFIG_SERIAL_AMBA_PL011=y")
        );
        assert!(!arm.contains("CONFIG_X86") && !arm.contains("CONFIG_SERIAL_8250="));
        assert!(!x86.contains("PL011"));
    }

    #[test]
    fn cross_builds_name_their_compiler() {
        let arm = toolchain(Arch::Aarch64);
        assert_eq!(arm.target, "Image");
        let x86 = toolchain(Arch::X86_64);
        assert_eq!(x86.image, "vmlinux");
        let foreign = if Arch::host() == Arch::X86_64 {
            arm
        } else {
            x86
        };
        assert!(foreign
            .make_vars
            .iter()
            .any(|v| v.starts_with("CROSS_COMPILE=")));
        assert_eq!(foreign.packages.len(), 1);
        let native = toolchain(Arch::host());
        assert!(native.make_vars.is_empty() && native.packages.is_empty());
    }
}
