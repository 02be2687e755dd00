//! Taking a warm clone from a running pool (the client side of `ec1 pool`).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::protocol::{socket_path, Answer, Request, AGENT_SOCKET, CONSOLE_LOG};
use super::remote::ClaimedEngine;
use crate::sandbox::connect_agent;
use crate::{BootPath, RestoreTimings, Sandbox, SandboxError, SandboxOptions, TemplateCache};
use ec1_client::Client;

/// How long a pool may take to answer a claim before the caller restores by itself.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest answer a pool gives (a run directory and the agent's announcement).
const MAX_ANSWER: usize = 16 * 1024;

/// What asking for a warm clone gave.
pub enum Claim {
    /// A warm clone, now the caller's.
    Claimed(Box<Sandbox>),
    /// A pool serves the template but has no clone ready (or failed the claim).
    Empty,
    /// No pool serves the template.
    NoPool,
}

/// A warm clone of template `key` from its pool, if a pool serves it and has one ready
/// (otherwise the caller restores the template itself). `t0` is when the caller's
/// start began.
pub fn claim(opts: &SandboxOptions, cache: &TemplateCache, key: &str, t0: Instant) -> Claim {
    let socket = socket_path(cache.root(), key);
    if !socket.exists() {
        return Claim::NoPool;
    }
    match try_claim(opts, &socket, key, t0) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("the pool at {} failed a claim: {e}", socket.display());
            Claim::Empty
        }
    }
}

fn try_claim(
    opts: &SandboxOptions,
    socket: &std::path::Path,
    key: &str,
    t0: Instant,
) -> Result<Claim, SandboxError> {
    let io = SandboxError::io;
    let lookup = t0.elapsed();
    let t1 = Instant::now();
    let mut conn = match UnixStream::connect(socket) {
        Ok(c) => c,
        // A socket nobody serves: the pool has gone.
        Err(_) => return Ok(Claim::NoPool),
    };
    conn.set_read_timeout(Some(CLAIM_TIMEOUT))
        .map_err(io("setting the claim timeout"))?;
    conn.write_all(Request::Claim.line().as_bytes())
        .map_err(io("sending a claim to the pool"))?;
    let (line, agent) = ec1_client::recv_line_with_fd(&conn, MAX_ANSWER)
        .map_err(io("reading the pool's answer"))?;
    let (dir, ready) = match Answer::parse(&line) {
        Some(Answer::Ok { dir, ready }) => (dir, ready),
        Some(Answer::Empty) => return Ok(Claim::Empty),
        None => {
            return Err(SandboxError::Options(format!(
                "the pool answered {line:?} to a claim"
            )))
        }
    };
    conn.set_read_timeout(None)
        .map_err(io("clearing the claim timeout"))?;
    let claimed = t1.elapsed();
    let engine: Arc<dyn ec1_engine::Engine> = Arc::new(ClaimedEngine::new(conn));
    let console = dir.join(CONSOLE_LOG);
    let t2 = Instant::now();
    let client = match (agent, ready) {
        // The pool's open connection to the clone's agent, taken over as it is.
        (Some(fd), Some(ready)) => Client::adopt(UnixStream::from(fd), ready).map_err(|error| {
            let _ = engine.stop();
            SandboxError::Agent {
                error,
                console: crate::sandbox::tail(&console, 20),
            }
        })?,
        _ => connect_agent(
            &engine,
            &dir.join(AGENT_SOCKET),
            &console,
            opts.ready_timeout,
        )?,
    };
    let reconnect = t2.elapsed();
    let refreshed =
        client
            .refresh(opts.hostname.as_deref())
            .map_err(|error| SandboxError::Agent {
                error,
                console: crate::sandbox::tail(&console, 20),
            })?;
    let timings = RestoreTimings {
        lookup,
        build: None,
        restore: claimed,
        reconnect,
        refresh: refreshed.took,
        clock_step_ns: refreshed.clock_step_ns,
        total: t0.elapsed(),
    };
    Ok(Claim::Claimed(Box::new(Sandbox::restored(
        engine,
        client,
        BootPath::Pool {
            key: key.to_string(),
        },
        timings,
        console,
        None,
    ))))
}
