//! The system calls each role may make.

use std::collections::BTreeMap;

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

/// The kind of work a thread does, which decides its filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves a device the guest drives from ec1's process: reads and writes what the
    /// guest sends (vsock packets, network frames, console bytes), memory and sockets
    /// it was handed, Unix sockets it connects to. It opens no file, runs no program,
    /// changes no credential and sends no signal.
    Device,
}

impl Role {
    /// Every role (for tests).
    pub const ALL: [Role; 1] = [Role::Device];

    /// The role's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Device => "device",
        }
    }

    /// The role's allow-list: system call number → conditions (none: any arguments).
    pub(crate) fn rules(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        match self {
            Role::Device => device(),
        }
    }
}

fn arg(index: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    // Conditions are built from constants here; `new` fails only for an index past 5.
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)
        .unwrap_or_else(|e| unreachable!("argument {index}: {e}"))
}

fn when(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).unwrap_or_else(|e| unreachable!("{e}"))
}

/// One rule per accepted value of argument `index`.
fn one_of(index: u8, values: &[u64]) -> Vec<SeccompRule> {
    values
        .iter()
        .map(|&v| when(vec![arg(index, SeccompCmpOp::Eq, v)]))
        .collect()
}

/// `prctl(PR_SET_VMA, ...)` (Linux 5.17), which glibc calls when it starts a thread.
const PR_SET_VMA: u64 = 0x5356_4d41;

fn device() -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut r: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let any = [
        // I/O on descriptors the thread was given or made.
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_lseek,
        libc::SYS_ftruncate,
        libc::SYS_fstat,
        libc::SYS_statx,
        libc::SYS_close,
        libc::SYS_dup,
        libc::SYS_fcntl,
        // Sockets: the vhost-user control socket (descriptors arrive with messages),
        // host listeners it accepts on and host sockets it connects to.
        libc::SYS_recvfrom,
        libc::SYS_recvmsg,
        libc::SYS_sendto,
        libc::SYS_sendmsg,
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_shutdown,
        libc::SYS_getsockopt,
        libc::SYS_setsockopt,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_socketpair,
        // Waiting.
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_ppoll,
        libc::SYS_eventfd2,
        libc::SYS_futex,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_clock_gettime,
        libc::SYS_sched_yield,
        libc::SYS_getrandom,
        // Memory: the allocator, thread stacks, guest memory handed over by QEMU
        // (mmap and mprotect below: never executable).
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_brk,
        // Threads: start (clone is below), name, signal masks, exit.
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_sigaltstack,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sched_getaffinity,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_exit,
        // A panic that aborts: abort() signals its own thread.
        libc::SYS_tgkill,
        libc::SYS_rt_sigaction,
        libc::SYS_exit_group,
    ];
    for nr in any {
        r.insert(nr, vec![]);
    }
    #[cfg(target_arch = "x86_64")]
    for nr in [libc::SYS_epoll_wait, libc::SYS_poll, libc::SYS_arch_prctl] {
        r.insert(nr, vec![]);
    }
    // No executable memory: a thread taken over by a guest cannot map code of its own.
    let not_exec = || {
        vec![when(vec![arg(
            2,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )])]
    };
    r.insert(libc::SYS_mmap, not_exec());
    r.insert(libc::SYS_mprotect, not_exec());
    // Only Unix sockets (a guest's vsock connection to a host listener).
    r.insert(libc::SYS_socket, one_of(0, &[libc::AF_UNIX as u64]));
    // Only non-blocking and close-on-exec switches. (The request's type is the C
    // library's: unsigned long in glibc, int in musl.)
    #[allow(clippy::unnecessary_cast)]
    r.insert(
        libc::SYS_ioctl,
        one_of(1, &[libc::FIONBIO as u64, libc::FIOCLEX as u64]),
    );
    // Only naming the thread (and reading the name), and the C library naming a new
    // thread's stack guard (PR_SET_VMA).
    r.insert(
        libc::SYS_prctl,
        one_of(
            0,
            &[
                libc::PR_SET_NAME as u64,
                libc::PR_GET_NAME as u64,
                PR_SET_VMA,
            ],
        ),
    );
    // Threads, never processes: clone must share the address space as a thread does.
    // clone3 passes its flags in memory, where a filter cannot look; it is allowed
    // here and answered ENOSYS by a filter of its own (see `errors`), which makes the
    // C library fall back to clone.
    r.insert(
        libc::SYS_clone,
        vec![when(vec![arg(
            0,
            SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
            libc::CLONE_THREAD as u64,
        )])],
    );
    r.insert(libc::SYS_clone3, vec![]);
    for (rules, _) in errors() {
        r.extend(rules);
    }
    r
}

/// Calls that fail with an error instead of trapping, in filters stacked on every
/// role's (allowed there, so the error wins), one filter per error:
///
/// - clone3 with ENOSYS: its flags cannot be checked (see [`device`]), and the C
///   library falls back to clone;
/// - opening files with EACCES: glibc's allocator opens
///   `/proc/sys/vm/overcommit_memory` when it shrinks a thread's heap, and copes with
///   a refusal, which keeps every other file out of reach too.
pub(crate) fn errors() -> [(BTreeMap<i64, Vec<SeccompRule>>, i32); 2] {
    let mut open = BTreeMap::from([(libc::SYS_openat, vec![])]);
    #[cfg(target_arch = "x86_64")]
    open.insert(libc::SYS_open, vec![]);
    [
        (BTreeMap::from([(libc::SYS_clone3, vec![])]), libc::ENOSYS),
        (open, libc::EACCES),
    ]
}
