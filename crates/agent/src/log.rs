//! The agent's console messages. PID 1's stderr is the guest console (serial), which
//! is where ec1's users look when a guest misbehaves; routine events stay quiet
//! unless `ec1.debug` is on the kernel command line.

use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns debug messages on or off.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether debug messages are on.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// A message that always reaches the console.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => {{
        // Not `eprintln!`: it panics when the console fails, and a panic ends PID 1.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "ec1-agent: {}", format_args!($($t)*));
    }};
}

/// A message for `ec1.debug` only.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::warn!($($t)*)
        }
    };
}
