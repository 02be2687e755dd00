//! `ec1 jailer` (also as a binary named `jailer`): Firecracker's jailer for ec1.
//!
//! As Firecracker's: the VMM binary is copied to `<base>/<exec name>/<id>/root`, the
//! process joins the cgroups and network namespace given, takes its resource limits,
//! enters a mount namespace of its own whose root becomes that directory
//! (`pivot_root`), optionally a new PID namespace, drops to `--uid/--gid` and execs
//! the VMM with `--id` and the start-time flags. Unlike Firecracker's VMM, ec1 runs
//! its engine as a separate program, so the engine comes into the jail too: the host's
//! `/usr` (QEMU, its libraries and firmware, busybox for an injected agent) is bind
//! mounted read-only, with the merged-usr links (`/bin`, `/lib`, ...) beside it; the
//! jail has `/dev/{null,zero,urandom,kvm,net/tun}` nodes, a `/proc` (QEMU maps guest
//! RAM through `/proc/self/fd`), and `/tmp`, `/run` and `/cache` writable by the jailed
//! user. QEMU inherits the uid, the namespaces and the cgroups, and installs its own
//! seccomp filter (`-sandbox`).

mod args;
mod cgroup;
mod mounts;

pub use args::JailerArgs;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::privileges::cvt;

/// Why the jail could not be made; the exit status is 1, as Firecracker's jailer's.
#[derive(Debug)]
pub struct JailError(pub String);

fn err(context: &str) -> impl FnOnce(std::io::Error) -> JailError + '_ {
    move |e| JailError(format!("{context}: {e}"))
}

/// Runs the jailer; returns the exit status on failure (on success it execs).
pub fn run(a: &JailerArgs) -> i32 {
    match jail(a) {
        Ok(never) => match never {},
        Err(JailError(msg)) => {
            eprintln!("Jailer error: {msg}");
            1
        }
    }
}

/// The jail's root for `a`.
pub fn chroot_dir(a: &JailerArgs, exec_name: &str) -> PathBuf {
    a.chroot_base_dir.join(exec_name).join(&a.id).join("root")
}

fn jail(a: &JailerArgs) -> Result<std::convert::Infallible, JailError> {
    args::check_id(&a.id).map_err(JailError)?;
    let meta = std::fs::metadata(&a.exec_file)
        .map_err(err(&format!("the exec file {}", a.exec_file.display())))?;
    if !meta.is_file() {
        return Err(JailError(format!(
            "the exec file {} is not a file",
            a.exec_file.display()
        )));
    }
    let exec_name = a
        .exec_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| JailError(format!("{} has no file name", a.exec_file.display())))?;
    let root = chroot_dir(a, &exec_name);
    std::fs::create_dir_all(&root).map_err(err(&format!("creating {}", root.display())))?;
    let jailed_exec = root.join(&exec_name);
    if jailed_exec.exists() {
        return Err(JailError(format!(
            "the jail {} is in use (it already holds {exec_name}): pick another --id or remove it",
            root.display()
        )));
    }
    std::fs::copy(&a.exec_file, &jailed_exec).map_err(err(&format!(
        "copying the exec file into {}",
        root.display()
    )))?;

    let parent = a.parent_cgroup.clone().unwrap_or_else(|| exec_name.clone());
    cgroup::apply(
        a.cgroup_version,
        &a.cgroups,
        &parent,
        &a.id,
        std::process::id(),
    )
    .map_err(JailError)?;
    for l in &a.resource_limits {
        set_limit(l)?;
    }
    if let Some(ns) = &a.netns {
        let f = std::fs::File::open(ns).map_err(err(&format!("opening {}", ns.display())))?;
        // SAFETY: setns on a descriptor this function owns; it changes only this
        // process's network namespace.
        cvt(unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) })
            .map_err(err(&format!(
                "joining the network namespace {}",
                ns.display()
            )))?;
    }
    let with_kvm = ec1_engine_qemu::HostProbe::default().kvm_usable().is_ok();
    mounts::prepare(&root, a.uid, a.gid, with_kvm)?;
    if a.new_pid_ns {
        // SAFETY: unshare(CLONE_NEWPID) affects only the children made after it.
        cvt(unsafe { libc::unshare(libc::CLONE_NEWPID) })
            .map_err(err("entering a new PID namespace"))?;
        // SAFETY: fork in a process that has started no thread of its own (the jailer
        // runs before anything else in `main`).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(err("forking into the PID namespace")(
                std::io::Error::last_os_error(),
            ));
        }
        if pid > 0 {
            let pid_file = root.join(format!("{exec_name}.pid"));
            let _ = std::fs::write(&pid_file, pid.to_string());
            std::process::exit(0);
        }
    }
    mounts::enter(&root)?;
    if a.daemonize {
        daemonize()?;
    }
    crate::privileges::drop_to(a.uid, a.gid).map_err(JailError)?;
    exec(&exec_name, a)
}

/// `fsize=N` or `no-file=N`.
fn set_limit(s: &str) -> Result<(), JailError> {
    let (k, v) = args::key_value(s).map_err(JailError)?;
    let n: u64 = v
        .parse()
        .map_err(|_| JailError(format!("invalid resource limit value {v:?}")))?;
    let resource = match k {
        "fsize" => libc::RLIMIT_FSIZE,
        "no-file" => libc::RLIMIT_NOFILE,
        other => {
            return Err(JailError(format!(
                "unknown resource {other:?}: use fsize or no-file"
            )))
        }
    };
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads the struct it is given.
    cvt(unsafe { libc::setrlimit(resource, &lim) }).map_err(err(&format!("setting {s}")))
}

fn daemonize() -> Result<(), JailError> {
    // SAFETY: setsid has no memory effects.
    if unsafe { libc::setsid() } < 0 {
        return Err(err("starting a new session")(
            std::io::Error::last_os_error(),
        ));
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(err("opening /dev/null"))?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors of this process.
        cvt(unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) })
            .map_err(err("redirecting stdio"))?;
    }
    Ok(())
}

/// The microseconds of `clock`.
fn clock_us(clock: libc::clockid_t) -> u64 {
    // SAFETY: timespec is plain data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Execs the jailed VMM as Firecracker's jailer does: `--id` and the start times
/// first, then the VMM's own arguments; the environment keeps only what it needs.
fn exec(exec_name: &str, a: &JailerArgs) -> Result<std::convert::Infallible, JailError> {
    let mut argv: Vec<OsString> = vec![
        format!("/{exec_name}").into(),
        "--id".into(),
        a.id.clone().into(),
        "--start-time-us".into(),
        clock_us(libc::CLOCK_MONOTONIC).to_string().into(),
        "--start-time-cpu-us".into(),
        clock_us(libc::CLOCK_PROCESS_CPUTIME_ID).to_string().into(),
    ];
    argv.extend(a.vmm_args.iter().cloned());
    let cargs: Vec<CString> = argv
        .into_iter()
        .map(|s| CString::new(s.into_vec()))
        .collect::<Result<_, _>>()
        .map_err(|_| JailError("an argument contains a NUL byte".into()))?;
    let env: Vec<CString> = [
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "XDG_CACHE_HOME=/cache",
        "TMPDIR=/tmp",
        "HOME=/cache",
    ]
    .iter()
    .map(|s| CString::new(*s).unwrap_or_default())
    .collect();
    let mut argp: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argp.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
    envp.push(std::ptr::null());
    let path = CString::new(Path::new(&format!("/{exec_name}")).as_os_str().as_bytes())
        .map_err(|_| JailError("the exec file name contains a NUL byte".into()))?;
    // SAFETY: NUL-terminated arrays of pointers to live CStrings; execve only returns
    // on failure.
    unsafe { libc::execve(path.as_ptr(), argp.as_ptr(), envp.as_ptr()) };
    Err(err(&format!("executing /{exec_name} in the jail"))(
        std::io::Error::last_os_error(),
    ))
}
