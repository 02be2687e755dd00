//! `template --pool`: the whole `ec1 run -- true` process against a warm pool, wall
//! clock, the way a user meets it: process start, template lookup, the claim (the
//! pool resumes a paused clone and hands over its agent connection), the hello,
//! the refresh, `true`, and the exit.
//!
//! The pool runs in this process on the benchmark's own cache (`target/bench/xdg`,
//! given to each `ec1 run` as `XDG_CACHE_HOME`), so a user's pool never serves a
//! measured run. Before every run the pool is refilled: a run measures a claim, never
//! a refill competing with it or a fallback to a plain restore (a run that was not
//! served by the pool is an error, not a number).

use crate::error::BenchError;
use crate::sample::{Run, Stage};
use ec1_sandbox::pool::{self, PoolConfig};
use ec1_sandbox::{SandboxOptions, TemplateCache};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Phase names, in order.
pub const PHASES: [&str; 8] = [
    "process start + exit",
    "lookup",
    "claim (resume)",
    "agent hello",
    "refresh clone",
    "exec true",
    "give back",
    "unaccounted",
];

/// Warm clones the benchmark's pool keeps for `template --pool`.
pub const SIZE: usize = 2;
/// How long the pool may take to (re)fill: a template build, and then this much per
/// clone.
const FILL_TIMEOUT: Duration = Duration::from_secs(180);
const FILL_PER_CLONE: Duration = Duration::from_secs(3);

/// What `ec1 run --timings` printed about a pooled start, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunTimings {
    pub lookup: f64,
    pub restore: f64,
    pub reconnect: f64,
    pub refresh: f64,
    pub command: f64,
    pub teardown: f64,
    pub total: f64,
}

/// Reads `ec1 run --timings`' report of a start from a pool; `None` if the run was
/// not served by a pool.
pub fn parse_timings(stderr: &str) -> Option<RunTimings> {
    let line = |prefix: &str| {
        stderr
            .lines()
            .find_map(|l| l.strip_prefix("ec1 timings: ")?.strip_prefix(prefix))
    };
    line("pool of template ")?;
    // "X ms = lookup a + restore b + agent reconnect c + refresh d (...)"
    let start = line("start ")?;
    let ms = |s: &str, name: &str| -> Option<f64> {
        let at = s.find(name)? + name.len();
        s[at..].split_whitespace().next()?.parse().ok()
    };
    let done = line("command ")?;
    Some(RunTimings {
        lookup: ms(start, "lookup ")?,
        restore: ms(start, "restore ")?,
        reconnect: ms(start, "agent reconnect ")?,
        refresh: ms(start, "refresh ")?,
        command: done.split_whitespace().next()?.parse().ok()?,
        teardown: ms(done, "teardown ")?,
        total: ms(done, "total ")?,
    })
}

/// The run for a wall time of `wall` ms and what the run reported.
pub fn phases_of(wall: f64, t: &RunTimings) -> Run {
    let d = |ms: f64| Duration::from_secs_f64(ms.max(0.0) / 1e3);
    let parts = t.lookup + t.restore + t.reconnect + t.refresh;
    Run::default()
        .phase(PHASES[0], Stage::Boot, d(wall - t.total))
        .phase(PHASES[1], Stage::Boot, d(t.lookup))
        .phase(PHASES[2], Stage::Boot, d(t.restore))
        .phase(PHASES[3], Stage::Boot, d(t.reconnect))
        .phase(PHASES[4], Stage::Boot, d(t.refresh))
        .phase(PHASES[5], Stage::Work, d(t.command))
        .phase(PHASES[6], Stage::Teardown, d(t.teardown))
        // What `total` holds beyond its parts (the start's own bookkeeping).
        .phase(
            PHASES[7],
            Stage::Teardown,
            d(t.total - parts - t.command - t.teardown),
        )
}

/// A pool served by this process for the benchmark's runs.
pub struct BenchPool {
    xdg: PathBuf,
    socket: PathBuf,
    size: usize,
    stop: Arc<AtomicBool>,
    server: Option<std::thread::JoinHandle<Result<String, ec1_sandbox::SandboxError>>>,
    opts: SandboxOptions,
}

impl BenchPool {
    /// Starts a pool of `size` clones of `opts` (its kernel resolved to a path, so
    /// that the runs name the same one), warmed up or not, in `xdg`'s template cache
    /// and waits until it is full, telling `progress` how far it got.
    pub fn start(
        opts: &SandboxOptions,
        xdg: &Path,
        size: usize,
        warm: bool,
        progress: &dyn Fn(usize),
    ) -> Result<BenchPool, BenchError> {
        let mut opts = opts.clone();
        if opts.kernel.is_none() {
            opts.kernel = Some(ec1_guest::kernel::path(opts.guest_arch()?)?);
        }
        let cache = TemplateCache::at(xdg.join("ec1").join("templates"));
        let lock = pool::lock(&opts, &cache)?.ok_or_else(|| {
            BenchError::Guest(format!(
                "a pool already serves the benchmark's cache {}",
                cache.root().display()
            ))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let server = {
            let (opts, stop) = (opts.clone(), stop.clone());
            let config = PoolConfig {
                size,
                idle_timeout: None,
                warm,
            };
            std::thread::spawn(move || {
                pool::serve(&opts, &cache, lock, config, stop, |i| {
                    let _ = tx.send(i.socket.clone());
                })
            })
        };
        let socket = rx.recv_timeout(FILL_TIMEOUT).map_err(|_| {
            BenchError::Guest("the benchmark's pool did not start (template build failed?)".into())
        })?;
        let p = BenchPool {
            xdg: xdg.to_path_buf(),
            socket,
            size,
            stop,
            server: Some(server),
            opts,
        };
        p.wait_full(progress)?;
        Ok(p)
    }

    /// The pool's own account of itself.
    pub fn status(&self) -> Option<ec1_sandbox::pool::PoolStatus> {
        pool::status(&self.socket)
    }

    /// The options its clones run (the kernel resolved).
    pub fn options(&self) -> &SandboxOptions {
        &self.opts
    }

    /// The template cache it serves.
    pub fn cache(&self) -> TemplateCache {
        TemplateCache::at(self.xdg.join("ec1").join("templates"))
    }

    fn wait_full(&self, progress: &dyn Fn(usize)) -> Result<(), BenchError> {
        let limit = FILL_TIMEOUT + FILL_PER_CLONE * self.size as u32;
        let deadline = Instant::now() + limit;
        let mut told = 0;
        loop {
            let ready = self.status().map_or(0, |s| s.ready);
            if ready >= self.size {
                return Ok(());
            }
            if ready != told {
                progress(ready);
                told = ready;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Guest(format!(
                    "the benchmark's pool did not fill within {} s ({ready} of {} clones)",
                    limit.as_secs(),
                    self.size
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the pool and its clones; returns how long that took.
    pub fn stop(mut self) -> Duration {
        let t = Instant::now();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
        t.elapsed()
    }

    /// The `ec1 run` arguments of the pool's configuration.
    fn run_args(&self) -> Vec<String> {
        let o = &self.opts;
        let mut v = vec![
            "run".to_string(),
            "--timings".into(),
            "--mem".into(),
            o.mem_mib.to_string(),
            "--vcpus".into(),
            o.vcpus.to_string(),
            "--engine".into(),
            o.engine.to_string(),
        ];
        if let Some(k) = &o.kernel {
            v.extend(["--kernel".into(), k.display().to_string()]);
        }
        if let Some(a) = o.arch {
            v.extend(["--arch".into(), a.to_string()]);
        }
        for b in &o.extra_boot_args {
            v.extend(["--boot-arg".into(), b.clone()]);
        }
        v
    }

    /// One `ec1 run -- true` served by the pool, once it is full again.
    pub fn run_once(&self, ec1: &Path) -> Result<Run, BenchError> {
        self.wait_full(&|_| {})?;
        let t = Instant::now();
        let out = Command::new(ec1)
            .env("XDG_CACHE_HOME", &self.xdg)
            .args(self.run_args())
            .args(["--", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| BenchError::Guest(format!("running {}: {e}", ec1.display())))?;
        let wall = t.elapsed().as_secs_f64() * 1e3;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(BenchError::Guest(format!(
                "`ec1 run -- true` failed ({}): {stderr}",
                out.status
            )));
        }
        let timings = parse_timings(&stderr).ok_or_else(|| {
            BenchError::Guest(format!(
                "the run was not served by the pool, nothing to measure: {stderr}"
            ))
        })?;
        Ok(phases_of(wall, &timings).metric("wall", "ms", wall))
    }
}

impl Drop for BenchPool {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "ec1 timings: pool of template 1fb365fb4803\n\
        ec1 timings: start 3.9 ms = lookup 0.3 + restore 1.2 + agent reconnect 1.3 + refresh 1.0 (clock stepped 11.4 s)\n\
        ec1 timings: command 11.2 ms, teardown 0.1 ms, total 15.1 ms\n";

    #[test]
    fn the_runs_report_is_read_and_split_into_phases() {
        let t = parse_timings(REPORT).unwrap();
        assert_eq!(
            t,
            RunTimings {
                lookup: 0.3,
                restore: 1.2,
                reconnect: 1.3,
                refresh: 1.0,
                command: 11.2,
                teardown: 0.1,
                total: 15.1,
            }
        );
        let r = phases_of(20.0, &t);
        assert!((r.total_ms() - 20.0).abs() < 1e-6, "{}", r.total_ms());
        assert!((r.phase_ms(PHASES[0]).unwrap() - 4.9).abs() < 1e-6);
        // Not from a pool: nothing to measure.
        assert!(parse_timings(&REPORT.replace("pool of template", "template")).is_none());
        assert!(parse_timings("garbage").is_none());
    }
}
