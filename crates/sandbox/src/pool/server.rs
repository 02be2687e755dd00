//! `ec1 pool`: keeps warm clones of one template ready for `ec1 run`.
//!
//! A restored clone is fast to start, but under TCG its first command pays for
//! translating every guest code path again (the translation cache lives in the QEMU
//! process, not in the snapshot): ~40–50 ms to reconnect and ~90 ms for a first `true`.
//! A pool does that work ahead of time: each member is restored, refreshed, runs a
//! warm-up command, is disconnected and reconnected once (so the reconnect path is
//! translated too), and is then paused, costing no CPU. A claim resumes one and hands
//! it over; the claimer reconnects and refreshes it (entropy, clock, host name) as
//! after any restore. Every member serves one claim and is then stopped: a claimed
//! guest is always fresh. The pool refills in the background.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ec1_client::{Client, Command, ConnectOptions};

use super::protocol::{socket_path, Answer, AGENT_SOCKET, CLAIM};
use crate::clone::{find_or_build, restore};
use crate::{make_engine_cached, Sandbox, SandboxError, SandboxOptions, TemplateCache};

/// How long a claimant may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the filler waits after a failed member before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let context = context.into();
    move |source| SandboxError::Io { context, source }
}

/// Warm members, and a signal for the filler.
#[derive(Default)]
struct Members {
    ready: Mutex<VecDeque<Sandbox>>,
    changed: Condvar,
}

/// Restores one member and warms it up (see the module documentation), leaving it
/// paused.
fn make_member(
    opts: &SandboxOptions,
    cache: &TemplateCache,
    key: &str,
) -> Result<Sandbox, SandboxError> {
    let engine = make_engine_cached(&opts.engine, opts.guest_arch()?, cache.root())?;
    let opts = SandboxOptions {
        hostname: None,
        ..opts.clone()
    };
    let sb = restore(
        &opts,
        cache,
        key,
        engine,
        Instant::now(),
        Duration::ZERO,
        None,
    )?;
    let agent_err = |error| SandboxError::Agent {
        error,
        console: sb.console_tail(20),
    };
    sb.client()
        .output(&Command::new("true"))
        .map_err(agent_err)?;
    sb.client().close();
    let socket = sb
        .run_dir_path()
        .map(|d| d.join(AGENT_SOCKET))
        .unwrap_or_default();
    let again = Client::connect(
        &socket,
        &ConnectOptions {
            connect_timeout: Duration::from_secs(10),
            ready_timeout: opts.ready_timeout,
        },
    )
    .map_err(agent_err)?;
    again.refresh(None).map_err(agent_err)?;
    again.output(&Command::new("true")).map_err(agent_err)?;
    again.close();
    sb.engine().pause()?;
    Ok(sb)
}

/// Keeps `size` members ready until `stop`.
fn fill(
    opts: &SandboxOptions,
    cache: &TemplateCache,
    key: &str,
    size: usize,
    members: &Members,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let n = members
            .ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        if n >= size {
            let g = members.ready.lock().unwrap_or_else(|e| e.into_inner());
            let _ = members.changed.wait_timeout(g, Duration::from_millis(200));
            continue;
        }
        match make_member(opts, cache, key) {
            Ok(sb) => {
                members
                    .ready
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(sb);
            }
            Err(e) => {
                log::warn!("the pool could not make a clone: {e}");
                std::thread::sleep(RETRY_AFTER);
            }
        }
    }
}

/// Serves one claimant: hands over a member and stops it when the claim ends.
fn serve_claim(conn: UnixStream, members: &Members) -> Result<(), SandboxError> {
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(io("setting a timeout"))?;
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(io("reading a claim"))?;
    let mut w = &conn;
    if line != CLAIM {
        return Err(SandboxError::Options(format!("not a claim: {line:?}")));
    }
    let member = members
        .ready
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .pop_front();
    members.changed.notify_all();
    let Some(sb) = member else {
        return w
            .write_all(Answer::Empty.line().as_bytes())
            .map_err(io("answering a claim"));
    };
    sb.engine().resume()?;
    let dir = sb.run_dir_path().map(Path::to_path_buf).unwrap_or_default();
    w.write_all(Answer::Ok(dir).line().as_bytes())
        .map_err(io("answering a claim"))?;
    // The claim lasts until the claimant closes the connection (or dies).
    conn.set_read_timeout(None)
        .map_err(io("clearing a timeout"))?;
    let mut sink = [0u8; 64];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    sb.shutdown()?;
    Ok(())
}

/// A pool being served; see [`serve`].
pub struct PoolInfo {
    /// Where claims go.
    pub socket: PathBuf,
    /// The template the members are restored from.
    pub key: String,
}

/// Serves a pool of `size` warm clones of `opts`'s template (building the template if
/// needed) until `stop` is set; `ready` is told where once claims are accepted. Setting
/// `stop` ends the pool at its next claim: connect to [`PoolInfo::socket`] to wake it.
pub fn serve(
    opts: &SandboxOptions,
    cache: &TemplateCache,
    size: usize,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(&PoolInfo),
) -> Result<(), SandboxError> {
    if let Some(why) = crate::template::unsupported_reason(opts) {
        return Err(SandboxError::Options(format!("no pool: {why}")));
    }
    let key = find_or_build(opts, cache)?;
    let socket = socket_path(cache.root(), &key);
    if UnixStream::connect(&socket).is_ok() {
        return Err(SandboxError::Options(format!(
            "a pool for this template already serves on {}",
            socket.display()
        )));
    }
    let _ = std::fs::remove_file(&socket);
    let listener = ec1_client::bind_private(&socket)
        .map_err(io(format!("listening on {}", socket.display())))?;
    let members = Arc::new(Members::default());
    let filler = {
        let (opts, cache, key, members, stop) = (
            opts.clone(),
            cache.clone(),
            key.clone(),
            members.clone(),
            stop.clone(),
        );
        std::thread::Builder::new()
            .name("ec1-pool-fill".into())
            .spawn(move || fill(&opts, &cache, &key, size, &members, &stop))
            .map_err(io("starting the pool's filler"))?
    };
    ready(&PoolInfo {
        socket: socket.clone(),
        key,
    });
    // Claims being served: their connection (to end them) and their thread.
    let mut claims: Vec<(UnixStream, std::thread::JoinHandle<()>)> = Vec::new();
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else { continue };
        // A claim hands over a running guest: only this user or root.
        if !ec1_client::peer_is_trusted(&conn) {
            log::warn!("pool: refusing a claim from another user");
            continue;
        }
        claims.retain(|(_, t)| !t.is_finished());
        let ctl = match conn.try_clone() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("cannot serve a claim: {e}");
                continue;
            }
        };
        let members = members.clone();
        let spawned = std::thread::Builder::new()
            .name("ec1-pool-claim".into())
            .spawn(move || {
                if let Err(e) = serve_claim(conn, &members) {
                    log::warn!("pool claim: {e}");
                }
            });
        match spawned {
            Ok(t) => claims.push((ctl, t)),
            Err(e) => log::warn!("cannot serve a claim: {e}"),
        }
    }
    let _ = std::fs::remove_file(&socket);
    // Stopping the pool stops the clones it handed out too, and waits for them: a
    // claim still shutting its clone down (its claimant just finished) must not be
    // cut short by the process exiting, which would leave the clone's run directory.
    for (conn, _) in &claims {
        let _ = conn.shutdown(std::net::Shutdown::Both);
    }
    for (_, t) in claims {
        let _ = t.join();
    }
    members.changed.notify_all();
    let _ = filler.join();
    members
        .ready
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_pool_says_so_and_garbage_is_refused() {
        let members = Members::default();
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        ours.write_all(CLAIM.as_bytes()).unwrap();
        serve_claim(theirs, &members).unwrap();
        let mut answer = String::new();
        ours.read_to_string(&mut answer).unwrap();
        assert_eq!(Answer::parse(&answer), Some(Answer::Empty));

        let (mut ours, theirs) = UnixStream::pair().unwrap();
        ours.write_all(b"give me a VM\n").unwrap();
        let e = serve_claim(theirs, &members).unwrap_err();
        assert!(e.to_string().contains("not a claim"), "{e}");
    }
}
