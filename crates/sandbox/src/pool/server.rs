//! `ec1 pool`: keeps warm clones of one template ready for `ec1 run`.
//!
//! A restored clone is fast to start, but under TCG its first command pays for
//! translating every guest code path again (the translation cache lives in the QEMU
//! process, not in the snapshot): ~40–50 ms to reconnect and ~90 ms for a first `true`.
//! A pool does that work ahead of time: each member is restored, refreshed, runs
//! warm-up commands, gets a fresh agent connection for its claimant and is then
//! paused, costing no CPU. A claim resumes one and hands it over with that connection
//! (no reconnect, and no preamble: see `ec1_client::Client::adopt`); the claimant
//! refreshes it (entropy, clock, host name) as after any restore. Every member serves one claim and is then stopped: a claimed
//! guest is always fresh. The pool refills in the background, but never in the
//! [`REFILL_QUIET`] after a claim: a refill is a restore plus a warm-up, a few hundred
//! milliseconds of CPU that would otherwise compete with the claimed clone's command.
//!
//! One pool per template: [`lock`] takes `pool-<key>.lock`, which the kernel releases
//! when the pool's process ends however it ends. The pool ends when told to (`stop`),
//! after an idle timeout without claims, or when its socket or template is removed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ec1_client::{Client, Command, ConnectOptions};
use ec1_guest::lock::FileLock;

use super::protocol::{
    lock_path, log_path, run_dir_prefix, socket_path, Answer, PoolStatus, Request, AGENT_SOCKET,
    STOPPING,
};
use crate::clone::{key_of, restore};
use crate::sandbox::new_run_dir;
use crate::{make_engine_cached, Sandbox, SandboxError, SandboxOptions, TemplateCache};

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the filler waits after a failed member before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// No refill starts this soon after a claim (see the module documentation).
pub const REFILL_QUIET: Duration = Duration::from_millis(300);
/// How often the accept loop looks at the stop flag, the idle timeout and whether its
/// socket and template still exist.
const TICK: Duration = Duration::from_millis(200);

/// How a pool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Warm clones kept ready.
    pub size: usize,
    /// End after this long without a claim (and none running); `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Warm each clone up before it is paused (see the module documentation). Without,
    /// a clone costs about a third less memory but its claimant's first command pays
    /// for TCG translating it: the choice between density and latency.
    pub warm: bool,
}

/// The right to serve the pool of one template: see [`lock`].
pub struct PoolLock {
    _lock: FileLock,
    key: String,
    log: PathBuf,
}

impl PoolLock {
    /// The template the pool serves.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Where a pool in the background logs (`ec1 pool ls` shows it).
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// Takes the right to serve `opts`'s pool: `None` when a live pool already serves this
/// configuration. Reads no file (the template key comes from stats).
pub fn lock(
    opts: &SandboxOptions,
    cache: &TemplateCache,
) -> Result<Option<PoolLock>, SandboxError> {
    if let Some(why) = crate::template::unsupported_reason(opts) {
        return Err(SandboxError::Options(format!("no pool: {why}")));
    }
    let (key, _, _) = key_of(opts, cache)?;
    std::fs::create_dir_all(cache.root()).map_err(SandboxError::io(format!(
        "creating {}",
        cache.root().display()
    )))?;
    let path = lock_path(cache.root(), &key);
    let Some(lock) = FileLock::try_exclusive(&path)
        .map_err(SandboxError::io(format!("locking {}", path.display())))?
    else {
        return Ok(None);
    };
    Ok(Some(PoolLock {
        _lock: lock,
        log: log_path(cache.root(), &key),
        key,
    }))
}

/// A warm clone: paused, with an open agent connection for its claimant.
struct Member {
    sb: Sandbox,
    agent: UnixStream,
    /// What the agent announced on `agent`.
    ready: ec1_client::ReadyInfo,
}

/// The members, and what `ec1 pool ls` shows.
struct Shared {
    ready: Mutex<VecDeque<Member>>,
    changed: Condvar,
    /// Clones handed out, and those still running.
    claims: AtomicU64,
    claimed: AtomicUsize,
    /// The last claim handed out (or the start).
    last_claim: Mutex<Instant>,
    started: Instant,
    /// Members being made now (counted under `ready`'s lock).
    building: AtomicUsize,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            ready: Mutex::default(),
            changed: Condvar::new(),
            claims: AtomicU64::new(0),
            claimed: AtomicUsize::new(0),
            last_claim: Mutex::new(Instant::now()),
            started: Instant::now(),
            building: AtomicUsize::new(0),
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, VecDeque<Member>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn since_last_claim(&self) -> Duration {
        self.last_claim
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    fn status(&self, key: &str, opts: &SandboxOptions, config: &PoolConfig) -> PoolStatus {
        PoolStatus {
            key: key.to_string(),
            pid: std::process::id(),
            size: config.size,
            ready: self.ready().len(),
            claims: self.claims.load(Ordering::SeqCst),
            claimed: self.claimed.load(Ordering::SeqCst),
            uptime_s: self.started.elapsed().as_secs(),
            idle_s: self.since_last_claim().as_secs(),
            idle_timeout_s: config.idle_timeout.map(|d| d.as_secs()),
            warm: config.warm,
            mem_mib: opts.mem_mib,
            vcpus: opts.vcpus,
        }
    }
}

/// Restores one member and warms it up (see the module documentation), leaving it
/// paused with an agent connection open for its claimant.
fn make_member(
    opts: &SandboxOptions,
    cache: &TemplateCache,
    key: &str,
    warm: bool,
) -> Result<Member, SandboxError> {
    let engine = make_engine_cached(&opts.engine, opts.guest_arch()?, cache.root())?;
    let opts = SandboxOptions {
        hostname: None,
        ..opts.clone()
    };
    let run_dir = new_run_dir(&run_dir_prefix(key))?;
    let sb = restore(&opts, cache, key, engine, Instant::now(), None, run_dir)?;
    let agent_err = |error| SandboxError::Agent {
        error,
        console: sb.console_tail(20),
    };
    if warm {
        warm_up(sb.client()).map_err(agent_err)?;
    }
    sb.client().close();
    let socket = sb
        .run_dir_path()
        .map(|d| d.join(AGENT_SOCKET))
        .unwrap_or_default();
    let connect = ConnectOptions {
        connect_timeout: Duration::from_secs(10),
        ready_timeout: opts.ready_timeout,
    };
    // The claimant adopts this connection (no reconnect of its own), so there is no
    // reconnect path to warm up: one connection for it, made now.
    let (agent, ready) = Client::preconnect(&socket, &connect).map_err(agent_err)?;
    sb.engine().pause()?;
    Ok(Member { sb, agent, ready })
}

/// Runs the agent paths a claimant's first command takes, so that TCG has translated
/// them: a command with stdin (as `ec1 run` gives one), its stdin closed and its
/// output drained, and one without. Measured: a claimed clone's first command with
/// stdin took 20–25 ms when the warm-up ran only commands without, 7–9 ms after this.
fn warm_up(client: &Client) -> Result<(), ec1_client::Error> {
    for _ in 0..2 {
        let mut p = client.spawn(
            &Command::new("sh")
                .arg("-c")
                .arg("cat; echo err >&2")
                .stdin(true),
        )?;
        if let Some(mut stdin) = p.stdin() {
            std::io::Write::write_all(&mut stdin, b"in\n").map_err(|source| {
                ec1_client::Error::Io {
                    context: "writing a warm-up command's stdin",
                    source,
                }
            })?;
            stdin.close()?;
        }
        for mut s in [p.stdout(), p.stderr()].into_iter().flatten() {
            while s.next_chunk()?.is_some() {}
        }
        p.wait()?;
        client.output(&Command::new("true"))?;
    }
    Ok(())
}

/// Filler threads: one per core, as making a member is a restore plus a warm-up, CPU
/// bound (2 fillers on this 2-core machine fill twice as fast as one); at most 4.
fn fillers(size: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
        .min(size)
        .max(1)
}

/// Keeps `size` members ready (with the other fillers) until `stop`.
fn fill(
    opts: &SandboxOptions,
    cache: &TemplateCache,
    key: &str,
    config: &PoolConfig,
    shared: &Shared,
    stop: &AtomicBool,
) {
    let size = config.size;
    while !stop.load(Ordering::SeqCst) {
        let quiet = REFILL_QUIET.saturating_sub(shared.since_last_claim());
        let g = shared.ready();
        let full = g.len() + shared.building.load(Ordering::SeqCst) >= size;
        if full || !quiet.is_zero() {
            let wait = if full { TICK } else { quiet };
            let _ = shared.changed.wait_timeout(g, wait);
            continue;
        }
        shared.building.fetch_add(1, Ordering::SeqCst);
        drop(g);
        let made = make_member(opts, cache, key, config.warm);
        let mut g = shared.ready();
        shared.building.fetch_sub(1, Ordering::SeqCst);
        match made {
            Ok(m) => g.push_back(m),
            Err(e) => {
                drop(g);
                log::warn!("the pool could not make a clone: {e}");
                std::thread::sleep(RETRY_AFTER);
            }
        }
    }
}

/// Serves one client: a claim (hands over a member and stops it when the claim ends),
/// an info request or a stop.
fn serve_conn(
    conn: UnixStream,
    shared: &Shared,
    status: &dyn Fn() -> PoolStatus,
    stop: &AtomicBool,
) -> Result<(), SandboxError> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(SandboxError::io("setting a timeout"))?;
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    // Requests are a word: a longer line is not one (and is not kept whole).
    (&mut reader)
        .take(64)
        .read_line(&mut line)
        .map_err(SandboxError::io("reading a request"))?;
    let mut w = &conn;
    let answer = |w: &mut &UnixStream, text: &str| {
        w.write_all(text.as_bytes())
            .map_err(SandboxError::io("answering a request"))
    };
    match Request::parse(&line) {
        Some(Request::Claim) => {}
        Some(Request::Info) => {
            let mut json = serde_json::to_string(&status()).unwrap_or_default();
            json.push('\n');
            return answer(&mut w, &json);
        }
        Some(Request::Stop) => {
            stop.store(true, Ordering::SeqCst);
            return answer(&mut w, STOPPING);
        }
        None => return Err(SandboxError::Options(format!("not a request: {line:?}"))),
    }
    let member = shared.ready().pop_front();
    let Some(Member { sb, agent, ready }) = member else {
        return answer(&mut w, &Answer::Empty.line());
    };
    *shared.last_claim.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    shared.claims.fetch_add(1, Ordering::SeqCst);
    shared.claimed.fetch_add(1, Ordering::SeqCst);
    let _running = Running(&shared.claimed);
    shared.changed.notify_all();
    sb.engine().resume()?;
    let dir = sb.run_dir_path().map(Path::to_path_buf).unwrap_or_default();
    // The agent connection goes with the answer; the claimant's copy is the only one
    // left, so the agent sees the host leave when the claimant does.
    let answer_line = Answer::Ok {
        dir,
        ready: Some(ready),
    }
    .line();
    ec1_client::send_with_fd(&conn, answer_line.as_bytes(), agent.as_raw_fd())
        .map_err(SandboxError::io("answering a claim"))?;
    drop(agent);
    // The claim lasts until the claimant closes the connection (or dies).
    conn.set_read_timeout(None)
        .map_err(SandboxError::io("clearing a timeout"))?;
    let mut sink = [0u8; 64];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    sb.shutdown()?;
    Ok(())
}

/// Counts a running claim until dropped.
struct Running<'a>(&'a AtomicUsize);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A pool being served; see [`serve`].
pub struct PoolInfo {
    /// Where claims go.
    pub socket: PathBuf,
    /// The template the members are restored from.
    pub key: String,
}

/// Removes the run directories a killed pool of `key` left in the temporary
/// directory. Only this user's: the lock says no live pool of ours uses them.
fn sweep_run_dirs(key: &str) {
    use std::os::unix::fs::MetadataExt;
    let prefix = run_dir_prefix(key);
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for e in rd.flatten() {
        let ours = e.file_name().to_string_lossy().starts_with(&prefix)
            && std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Turns transparent huge pages off for this process and the clones it starts (the
/// setting is inherited across fork and exec). QEMU asks for huge pages on its TCG
/// code buffer, so each region a clone's translations touch costs a whole 2 MiB page:
/// measured on a paused 128 MiB clone, 12 MiB of code buffer with huge pages against
/// (see `docs/performance.md`) without. A pool's clones are many and mostly idle, so
/// memory matters more here than the few percent huge pages save a running guest.
fn no_huge_pages_for_clones() {
    // SAFETY: prctl with integer arguments only; it changes a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        log::warn!(
            "cannot turn transparent huge pages off for the pool's clones: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Why the pool should end now, if it should.
fn should_end(
    stop: &AtomicBool,
    shared: &Shared,
    config: &PoolConfig,
    socket: &Path,
    cache: &TemplateCache,
    key: &str,
) -> Option<String> {
    if stop.load(Ordering::SeqCst) {
        return Some("asked to stop".into());
    }
    if let Some(idle) = config.idle_timeout {
        if shared.claimed.load(Ordering::SeqCst) == 0 && shared.since_last_claim() >= idle {
            return Some(format!("idle for {} s", idle.as_secs()));
        }
    }
    if !socket.exists() {
        return Some(format!("its socket {} was removed", socket.display()));
    }
    if !cache.has(key) {
        return Some(format!("its template {key} was removed"));
    }
    None
}

/// Waits up to [`TICK`] for a connection on `listener` (non-blocking).
fn accept_within_tick(listener: &UnixListener) -> Option<UnixStream> {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, TICK.as_millis() as libc::c_int) };
    if n <= 0 {
        return None;
    }
    // Non-blocking listener: a connection that went away meanwhile is WouldBlock.
    listener.accept().ok().map(|(c, _)| c)
}

/// Serves a pool of `config.size` warm clones of `opts`'s template (building the
/// template if needed) until `stop` is set, a client asks it to stop, it has been idle
/// for `config.idle_timeout`, or its socket or template is removed; `ready` is told
/// where once claims are accepted. Returns why it ended.
pub fn serve(
    opts: &SandboxOptions,
    cache: &TemplateCache,
    lock: PoolLock,
    config: PoolConfig,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(&PoolInfo),
) -> Result<String, SandboxError> {
    let key = lock.key.clone();
    crate::clone::find_or_build(opts, cache)?;
    no_huge_pages_for_clones();
    sweep_run_dirs(&key);
    let socket = socket_path(cache.root(), &key);
    // A socket left by a killed pool: the lock says nobody serves it.
    let _ = std::fs::remove_file(&socket);
    let listener = ec1_client::bind_private(&socket).map_err(SandboxError::io(format!(
        "listening on {}",
        socket.display()
    )))?;
    listener
        .set_nonblocking(true)
        .map_err(SandboxError::io("making the pool's socket non-blocking"))?;
    let shared = Arc::new(Shared::new());
    let mut filler_threads = Vec::new();
    for _ in 0..fillers(config.size) {
        let (opts, cache, key, shared, stop) = (
            opts.clone(),
            cache.clone(),
            key.clone(),
            shared.clone(),
            stop.clone(),
        );
        let t = std::thread::Builder::new()
            .name("ec1-pool-fill".into())
            .spawn(move || fill(&opts, &cache, &key, &config, &shared, &stop));
        match t {
            Ok(t) => filler_threads.push(t),
            Err(e) if !filler_threads.is_empty() => {
                log::warn!("the pool runs with fewer fillers: {e}")
            }
            Err(e) => {
                let _ = std::fs::remove_file(&socket);
                return Err(SandboxError::io("starting the pool's filler")(e));
            }
        }
    }
    ready(&PoolInfo {
        socket: socket.clone(),
        key: key.clone(),
    });
    // Connections being served: their socket (to end them) and their thread.
    let mut conns: Vec<(UnixStream, std::thread::JoinHandle<()>)> = Vec::new();
    let why = loop {
        if let Some(why) = should_end(&stop, &shared, &config, &socket, cache, &key) {
            break why;
        }
        let Some(conn) = accept_within_tick(&listener) else {
            continue;
        };
        // A claim hands over a running guest: only this user or root.
        if !ec1_client::peer_is_trusted(&conn) {
            log::warn!("pool: refusing a request from another user");
            continue;
        }
        conns.retain(|(_, t)| !t.is_finished());
        let ctl = match conn.try_clone() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("cannot serve a request: {e}");
                continue;
            }
        };
        let (shared, stop2, opts2, key2) =
            (shared.clone(), stop.clone(), opts.clone(), key.clone());
        let spawned = std::thread::Builder::new()
            .name("ec1-pool-conn".into())
            .spawn(move || {
                let status = || shared.status(&key2, &opts2, &config);
                if let Err(e) = serve_conn(conn, &shared, &status, &stop2) {
                    log::warn!("pool: {e}");
                }
            });
        match spawned {
            Ok(t) => conns.push((ctl, t)),
            Err(e) => log::warn!("cannot serve a request: {e}"),
        }
    };
    stop.store(true, Ordering::SeqCst);
    // Only ours: a successor may already have bound a new socket at this path if the
    // old one was removed under us.
    if !why.contains("socket") {
        let _ = std::fs::remove_file(&socket);
    }
    // Stopping the pool stops the clones it handed out too, and waits for them: a
    // claim still shutting its clone down (its claimant just finished) must not be
    // cut short by the process exiting, which would leave the clone's run directory.
    for (conn, _) in &conns {
        let _ = conn.shutdown(std::net::Shutdown::Both);
    }
    for (_, t) in conns {
        let _ = t.join();
    }
    shared.changed.notify_all();
    for t in filler_threads {
        let _ = t.join();
    }
    shared.ready().clear();
    drop(lock);
    Ok(why)
}

/// Asks the pool on `socket` for `request` (info or stop) and returns its answer line.
pub fn ask(socket: &Path, request: Request) -> std::io::Result<String> {
    let mut conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    conn.write_all(request.line().as_bytes())?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    Ok(line)
}

/// The status of the pool serving on `socket`, if one answers there.
pub fn status(socket: &Path) -> Option<PoolStatus> {
    let line = ask(socket, Request::Info).ok()?;
    serde_json::from_str(&line).ok()
}

/// Every pool that answers in `cache`, sorted by key, and the sockets nobody listens
/// on any more (a pool that was killed). A pool that is there but slow to answer is in
/// neither list.
pub fn list(cache: &TemplateCache) -> (Vec<PoolStatus>, Vec<PathBuf>) {
    let mut live = Vec::new();
    let mut dead = Vec::new();
    let Ok(rd) = std::fs::read_dir(cache.root()) else {
        return (live, dead);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("pool-") && name.ends_with(".sock")) {
            continue;
        }
        match status(&e.path()) {
            Some(s) => live.push(s),
            None => {
                let refused = UnixStream::connect(e.path())
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
                if refused {
                    dead.push(e.path());
                }
            }
        }
    }
    live.sort_by(|a, b| a.key.cmp(&b.key));
    dead.sort();
    (live, dead)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_for_test() -> PoolStatus {
        Shared::new().status(
            "k",
            &SandboxOptions::default(),
            &PoolConfig {
                size: 1,
                idle_timeout: None,
                warm: true,
            },
        )
    }

    #[test]
    fn an_empty_pool_says_so_and_answers_info_stop_and_refuses_garbage() {
        let shared = Shared::new();
        let stop = AtomicBool::new(false);
        let ask = |req: &[u8]| {
            let (mut ours, theirs) = UnixStream::pair().unwrap();
            ours.write_all(req).unwrap();
            let r = serve_conn(theirs, &shared, &status_for_test, &stop);
            let mut answer = String::new();
            // (A request the pool did not read all of ends in a reset.)
            let _ = ours.read_to_string(&mut answer);
            (r, answer)
        };
        let (r, answer) = ask(Request::Claim.line().as_bytes());
        r.unwrap();
        assert_eq!(Answer::parse(&answer), Some(Answer::Empty));
        assert_eq!(shared.claims.load(Ordering::SeqCst), 0);

        let (r, answer) = ask(b"info\n");
        r.unwrap();
        let s: PoolStatus = serde_json::from_str(&answer).unwrap();
        assert_eq!((s.key.as_str(), s.size, s.ready), ("k", 1, 0));
        assert_eq!(s.pid, std::process::id());

        let (r, _) = ask(b"give me a VM\n");
        assert!(r.unwrap_err().to_string().contains("not a request"));
        let (r, _) = ask(&[b'x'; 100_000]);
        assert!(r.unwrap_err().to_string().contains("not a request"));
        assert!(!stop.load(Ordering::SeqCst));
        let (r, answer) = ask(b"stop\n");
        r.unwrap();
        assert_eq!(answer, STOPPING);
        assert!(stop.load(Ordering::SeqCst));
    }

    #[test]
    fn fillers_follow_the_cores_and_the_size() {
        assert_eq!(fillers(1), 1);
        let n = fillers(100);
        assert!((1..=4).contains(&n), "{n}");
    }

    #[test]
    fn the_pool_ends_when_asked_idle_or_orphaned() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = TemplateCache::at(tmp.path().to_path_buf());
        let socket = tmp.path().join("s.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        std::fs::create_dir(cache.dir("k")).unwrap();
        for f in [crate::template::STATE_FILE, crate::template::MEM_FILE] {
            std::fs::write(cache.dir("k").join(f), b"").unwrap();
        }
        let shared = Shared::new();
        let stop = AtomicBool::new(false);
        let mut config = PoolConfig {
            size: 1,
            idle_timeout: None,
            warm: true,
        };
        let end = |c: &PoolConfig| should_end(&stop, &shared, c, &socket, &cache, "k");
        assert_eq!(end(&config), None);
        config.idle_timeout = Some(Duration::ZERO);
        assert!(end(&config).unwrap().contains("idle"));
        // Not while a claim runs.
        shared.claimed.fetch_add(1, Ordering::SeqCst);
        assert_eq!(end(&config), None);
        stop.store(true, Ordering::SeqCst);
        assert!(end(&config).unwrap().contains("asked"));
        stop.store(false, Ordering::SeqCst);
        std::fs::remove_dir_all(cache.dir("k")).unwrap();
        assert!(end(&config).unwrap().contains("template"));
        std::fs::remove_file(&socket).unwrap();
        assert!(end(&config).unwrap().contains("socket"));
    }

    #[test]
    fn only_a_killed_pools_own_run_directories_are_swept() {
        let key = "feedfacefeedface0000";
        let tmp = std::env::temp_dir();
        let stale = tempfile::Builder::new()
            .prefix(&run_dir_prefix(key))
            .tempdir_in(&tmp)
            .unwrap()
            .keep();
        let other = tempfile::Builder::new()
            .prefix("ec1-pool-0000000000000000-")
            .tempdir_in(&tmp)
            .unwrap();
        sweep_run_dirs(key);
        assert!(!stale.exists());
        assert!(other.path().exists());
    }
}
