//! The background pool `ec1 run` leaves: concurrent first runs start exactly one, the
//! runs after it take warm clones, `EC1_POOL=off` and `--no-pool` stay away from it,
//! `ec1 pool ls|stop` see and end it, a killed pool takes its clones with it and its
//! successor removes what it left, and an idle pool ends by itself.

use ec1_testkit::{children_named, kernel, output_with_input, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod common;

use common::{ok, text, EC1};

/// A cache and a temporary directory of this test's own.
struct Env {
    _tmp: tempfile::TempDir,
    xdg: PathBuf,
    run_tmp: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let xdg = tmp.path().join("cache");
        let run_tmp = tmp.path().join("tmp");
        std::fs::create_dir(&run_tmp).unwrap();
        Env {
            xdg,
            run_tmp,
            _tmp: tmp,
        }
    }

    fn ec1(&self, args: &[&str]) -> Command {
        ec1_in(&self.xdg, &self.run_tmp, args)
    }

    fn run(&self, extra: &[&str], script: &str) -> Output {
        run_in(&self.xdg, &self.run_tmp, extra, script)
    }

    fn pool(&self, args: &[&str]) -> String {
        let mut a = vec!["pool"];
        a.extend_from_slice(args);
        ok(&self.ec1(&a).output().unwrap())
    }

    /// The pid of the one pool `ec1 pool ls` lists once its clones are all warm.
    fn warm_pool(&self) -> u32 {
        let line = wait_for(Duration::from_secs(180), || {
            let ls = self.pool(&["ls"]);
            let line = ls.lines().next()?.to_string();
            line.contains(" 2/2 ready ").then_some(ls)
        })
        .unwrap_or_else(|| panic!("no warm pool: {}", self.pool(&["ls"])));
        assert_eq!(line.lines().count(), 1, "{line}");
        pid_of(&line)
    }

    /// The run directories of pool clones in this test's temporary directory.
    fn clone_dirs(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.run_tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("ec1-pool-"))
            })
            .collect();
        v.sort();
        v
    }
}

/// `ec1 args` with its cache in `xdg` and its temporary files in `run_tmp`.
fn ec1_in(xdg: &Path, run_tmp: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(EC1);
    cmd.env("XDG_CACHE_HOME", xdg)
        .env("TMPDIR", run_tmp)
        .env_remove("EC1_POOL")
        .args(args);
    cmd
}

/// `ec1 run --timings` of `script` on TCG with 128 MiB, plus `extra` flags.
fn run_in(xdg: &Path, run_tmp: &Path, extra: &[&str], script: &str) -> Output {
    let mut cmd = ec1_in(
        xdg,
        run_tmp,
        &["run", "--timings", "--engine", "qemu-tcg", "--mem", "128"],
    );
    cmd.arg("--kernel")
        .arg(kernel())
        .args(extra)
        .args(["--", "sh", "-c", script]);
    output_with_input(cmd, b"")
}

fn pid_of(ls_line: &str) -> u32 {
    let mut words = ls_line.split_whitespace();
    words.find(|w| *w == "pid");
    words.next().unwrap().parse().unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// The `ec1 pool --background` processes whose template cache is under `xdg`.
fn background_pools(xdg: &Path) -> Vec<u32> {
    let want = format!("XDG_CACHE_HOME={}", xdg.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            cmdline
                .windows(b"pool\0--background".len())
                .any(|w| w == b"pool\0--background")
                && environ.split(|b| *b == 0).any(|v| v == want.as_bytes())
                && alive(*pid)
        })
        .collect()
}

#[test]
fn ec1_run_leaves_one_pool_that_serves_the_next_runs_and_ends_cleanly() {
    let env = Env::new();
    // Three first runs at once: one builds the template, all answer, one pool stays.
    let runs: Vec<_> = (0..3)
        .map(|i| {
            let (xdg, run_tmp) = (env.xdg.clone(), env.run_tmp.clone());
            std::thread::spawn(move || run_in(&xdg, &run_tmp, &[], &format!("echo first-{i}")))
        })
        .collect();
    let mut started = 0;
    for (i, r) in runs.into_iter().enumerate() {
        let out = r.join().unwrap();
        assert_eq!(ok(&out), format!("first-{i}\n"));
        let err = text(&out.stderr);
        assert!(err.contains("ec1 timings: template "), "{err}");
        started += usize::from(err.contains("starts in the background"));
    }
    assert!(started >= 1, "no run started a pool");
    let pid = env.warm_pool();
    assert_eq!(background_pools(&env.xdg), vec![pid], "exactly one pool");
    let log = std::fs::read_dir(env.xdg.join("ec1/templates"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .expect("the pool's log");
    let log = std::fs::read_to_string(log.path()).unwrap();
    assert!(log.contains("ec1 pool: serving 2 warm clone(s)"), "{log}");

    // The next run takes a warm clone; its exit status and output are the command's.
    let out = env.run(&[], "echo from-the-pool; exit 3");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "from-the-pool\n");
    assert!(
        text(&out.stderr).contains("ec1 timings: pool of template "),
        "{}",
        text(&out.stderr)
    );
    // With stdin on /dev/null the command reads end of file at once.
    let mut cmd = env.ec1(&["run", "--engine", "qemu-tcg", "--mem", "128", "--kernel"]);
    cmd.arg(kernel())
        .args(["--", "sh", "-c", "cat; echo read-all"])
        .stdin(std::process::Stdio::null());
    assert_eq!(ok(&cmd.output().unwrap()), "read-all\n");
    // Opting out restores the template as before, and starts nothing.
    for (extra, env_off) in [(&["--no-pool"][..], false), (&[][..], true)] {
        let mut cmd = env.ec1(&["run", "--timings", "--engine", "qemu-tcg", "--mem", "128"]);
        if env_off {
            cmd.env("EC1_POOL", "off");
        }
        cmd.arg("--kernel")
            .arg(kernel())
            .args(extra)
            .args(["--", "echo", "own"]);
        let out = output_with_input(cmd, b"");
        assert_eq!(ok(&out), "own\n");
        let err = text(&out.stderr);
        assert!(err.contains("ec1 timings: template "), "{err}");
        assert!(!err.contains("pool"), "{err}");
    }

    // Killed hard, the pool takes its clones with it (they die with their parent).
    assert_eq!(env.warm_pool(), pid, "refilled after the claims");
    let clones = children_named(pid, "qemu");
    assert_eq!(clones.len(), 2, "two paused clones: {clones:?}");
    let left_dirs = env.clone_dirs();
    assert_eq!(left_dirs.len(), 2, "{left_dirs:?}");
    // SAFETY: kill has no memory effects; `pid` is the pool this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let gone = wait_for(Duration::from_secs(20), || {
        (!alive(pid) && clones.iter().all(|c| !alive(*c))).then_some(())
    });
    assert!(gone.is_some(), "the pool or its clones outlived SIGKILL");
    let ls = env.pool(&["ls"]);
    assert!(ls.starts_with("no pools run"), "{ls}");

    // The next run starts a successor, which removes what the killed pool left; this
    // one ends after 2 idle seconds.
    let out = env.run(&["--pool-idle", "2"], "true");
    ok(&out);
    assert!(
        text(&out.stderr).contains("starts in the background"),
        "{}",
        text(&out.stderr)
    );
    let pid2 = env.warm_pool();
    assert_ne!(pid2, pid);
    for d in &left_dirs {
        assert!(!d.exists(), "the successor left {}", d.display());
    }
    let ended = wait_for(Duration::from_secs(60), || (!alive(pid2)).then_some(()));
    assert!(ended.is_some(), "the idle pool did not end");
    assert!(env.pool(&["ls"]).starts_with("no pools run"));
    assert!(env.clone_dirs().is_empty(), "{:?}", env.clone_dirs());

    // `ec1 pool stop` ends a pool and everything it had.
    ok(&env.run(&[], "true"));
    let pid3 = env.warm_pool();
    let key = env.pool(&["ls"])[..8].to_string();
    let stopped = env.pool(&["stop", &key]);
    assert!(
        stopped.starts_with("stopping the pool of template "),
        "{stopped}"
    );
    let ended = wait_for(Duration::from_secs(60), || (!alive(pid3)).then_some(()));
    assert!(ended.is_some(), "the stopped pool did not end");
    assert!(env.clone_dirs().is_empty(), "{:?}", env.clone_dirs());
    let templates = env.xdg.join("ec1/templates");
    let socks: Vec<_> = std::fs::read_dir(&templates)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sock"))
        .collect();
    assert!(socks.is_empty(), "{socks:?}");
    let e = env.ec1(&["pool", "stop", "nope"]).output().unwrap();
    assert_eq!(e.status.code(), Some(1));
    assert!(text(&e.stderr).contains("0 pools"), "{}", text(&e.stderr));
}

#[test]
fn bench_template_pool_measures_whole_runs_served_by_its_own_pool() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("r.json");
    let out = Command::new(EC1)
        .current_dir(tmp.path())
        .env("TMPDIR", tmp.path())
        .args([
            "bench", "template", "--pool", "-n", "3", "--warmup", "0", "-q",
        ])
        .arg("--kernel")
        .arg(kernel())
        .arg("--json")
        .arg(&json)
        .arg("--svg")
        .arg(tmp.path().join("w.svg"))
        .output()
        .unwrap();
    let report = ok(&out);
    assert!(report.contains("ec1 run (pool) (3 runs"), "{report}");
    for phase in [
        "claim (resume)",
        "agent hello",
        "exec true",
        "process start + exit",
    ] {
        assert!(report.contains(phase), "{phase}: {report}");
    }
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(j["variants"][0]["runs"].as_array().unwrap().len(), 3, "{j}");
    // The pool ended with the benchmark: no socket, no clone left.
    let templates = tmp.path().join("target/bench/xdg/ec1/templates");
    assert!(std::fs::read_dir(&templates)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().ends_with(".sock")));
    assert!(std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with("ec1-pool-")));
}

#[test]
fn bench_density_reports_what_each_paused_clone_costs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(EC1)
        .current_dir(tmp.path())
        .env("TMPDIR", tmp.path())
        .args([
            "bench", "density", "-n", "2", "--mem", "128", "--lean", "-q",
        ])
        .arg("--kernel")
        .arg(kernel())
        .output()
        .unwrap();
    let report = ok(&out);
    for line in [
        "PSS per clone",
        "ec1 PSS share per clone",
        "TCG code per clone",
        "idle CPU (all)",
        "without warm-up (--lean)",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    let j: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("target/bench/density.json")).unwrap(),
    )
    .unwrap();
    let clones = j["variants"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "clones")
        .unwrap_or_else(|| panic!("{j}"))
        .clone();
    assert_eq!(clones["stats"]["median"].as_f64(), Some(2.0), "{clones}");
    assert!(std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with("ec1-pool-")));
}
