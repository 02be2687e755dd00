//! PID 1's reaper, in a process of its own (it reaps every child of the process, so it
//! cannot share one with other tests).

use ec1_agent::{InitReaper, Reaper};
use ec1_proto::Termination;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_init_reaper_dispatches_statuses_reaps_orphans_and_survives_failed_spawns() {
    let r = InitReaper::start().unwrap();
    // A status reaches the session that spawned the command.
    let (_c, rx) = r.spawn(Command::new("sh").args(["-c", "exit 5"])).unwrap();
    let st = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(ec1_agent::sys::termination(st), Termination::Code(5));

    // A spawn that fails after fork (bad working directory) is reaped by std itself;
    // the reaper must not take the child first (std would panic).
    for _ in 0..20 {
        let e = r
            .spawn(Command::new("/bin/true").current_dir("/nonexistent-ec1-dir"))
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    // The reaper sleeps with no children and wakes for the next one.
    std::thread::sleep(Duration::from_millis(50));
    let (_c, rx) = r
        .spawn(Command::new("sh").args(["-c", "sleep 0.2 & echo $! > /dev/null; kill -9 $$"]))
        .unwrap();
    let st = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(
        ec1_agent::sys::termination(st),
        Termination::Signal {
            signal: 9,
            core_dumped: false
        }
    );
    // Many at once.
    let rxs: Vec<_> = (0..16)
        .map(|i| {
            r.spawn(Command::new("sh").args(["-c", &format!("exit {i}")]))
                .unwrap()
                .1
        })
        .collect();
    for (i, rx) in rxs.into_iter().enumerate() {
        let st = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(ec1_agent::sys::termination(st), Termination::Code(i as i32));
    }
    // No zombies are left among this process's children.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let zombies = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|s| {
                let rest = s.rsplit(')').next().unwrap_or("");
                let f: Vec<_> = rest.split_whitespace().collect();
                f.first() == Some(&"Z")
                    && f.get(1) == Some(&std::process::id().to_string().as_str())
            })
            .count();
        if zombies == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{zombies} zombie children left");
        std::thread::sleep(Duration::from_millis(20));
    }
}
