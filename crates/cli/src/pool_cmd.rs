//! `ec1 pool`: serves warm clones of one configuration's boot template to `ec1 run`
//! until SIGINT or SIGTERM.

use crate::args::PoolArgs;
use crate::run_cmd::sandbox_options;
use crate::signals::Blocked;
use ec1_sandbox::pool::{serve, PoolInfo};
use ec1_sandbox::TemplateCache;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub fn run(args: &PoolArgs) -> i32 {
    match run_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ec1 pool: {e}");
            1
        }
    }
}

fn run_inner(args: &PoolArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cache = TemplateCache::default_location()?;
    let opts = sandbox_options(&args.machine);
    // Before any thread starts, so that the signal thread alone takes them.
    let signals = Blocked::block(&[libc::SIGINT, libc::SIGTERM])?;
    let stop = Arc::new(AtomicBool::new(false));
    let socket: Arc<Mutex<Option<PathBuf>>> = Arc::default();
    {
        let (stop, socket) = (stop.clone(), socket.clone());
        std::thread::Builder::new()
            .name("ec1-pool-signals".into())
            .spawn(move || {
                let sig = signals.wait();
                eprintln!("ec1 pool: stopping (signal {sig})");
                stop.store(true, Ordering::SeqCst);
                // Wake the accept loop.
                if let Some(s) = socket.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    let _ = std::os::unix::net::UnixStream::connect(s);
                }
            })?;
    }
    let stop_now = stop.clone();
    serve(
        &opts,
        &cache,
        args.size as usize,
        stop,
        |info: &PoolInfo| {
            *socket.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.socket.clone());
            if stop_now.load(Ordering::SeqCst) {
                // The signal came before there was a socket to wake.
                let _ = std::os::unix::net::UnixStream::connect(&info.socket);
            }
            eprintln!(
                "ec1 pool: serving {} warm clone(s) of template {} on {}",
                args.size,
                info.key,
                info.socket.display()
            );
        },
    )?;
    Ok(())
}
