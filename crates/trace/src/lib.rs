//! Phase events: a monotonic timestamp for each step of a VM's life (process start, API
//! socket ready, each API request, engine spawned, QMP ready, guest started, guest boot
//! signal, agent ready, each command, snapshot steps, teardown).
//!
//! Every layer records its own events with [`event!`]; nothing is passed down the call
//! chain. Two consumers:
//! - a JSON-lines file (`--trace-file`), one object per event, written as it happens
//!   (a FIFO reader sees each line at once), with `t_us` on one monotonic clock whose
//!   zero is the process start ([`init`]), `unix_us` for lining up several processes,
//!   and the event's own fields;
//! - [`latest`]: the last time of each event name, which the API's metrics carry.
//!
//! Cost when no file is set: one relaxed atomic load per event for the file, and a
//! short lock to note the latest time (no allocation: names are `&'static str`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use serde_json::Value;

/// The zero of every `t_us`: set by [`init`], else by the first event.
static ORIGIN: OnceLock<Instant> = OnceLock::new();
/// Whether a trace file is open (checked before building an event's fields).
static FILE_ON: AtomicBool = AtomicBool::new(false);
static FILE: Mutex<Option<File>> = Mutex::new(None);
/// The last time (µs since the origin) of each event name, in first-seen order.
static LATEST: Mutex<Vec<(&'static str, u64)>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fixes the clock's zero at "now" (call first thing in `main`) and records
/// `process.start`.
pub fn init() {
    ORIGIN.get_or_init(Instant::now);
    emit("process.start", &[("pid", Value::from(std::process::id()))]);
}

/// Starts writing events to `path` (created, or appended to: a FIFO works).
pub fn open_file(path: &Path) -> io::Result<()> {
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    *lock(&FILE) = Some(f);
    FILE_ON.store(true, Ordering::Release);
    // The file's first line is the clock's zero, whenever it was opened.
    let origin = *ORIGIN.get_or_init(Instant::now);
    emit_at(
        "process.start",
        origin,
        &[("pid", Value::from(std::process::id()))],
    );
    Ok(())
}

/// Stops writing to the trace file (events are still noted for [`latest`]).
pub fn close_file() {
    FILE_ON.store(false, Ordering::Release);
    lock(&FILE).take();
}

/// Whether events are being written to a file: [`event!`] builds fields only then.
#[inline]
pub fn file_enabled() -> bool {
    FILE_ON.load(Ordering::Relaxed)
}

/// Microseconds from the origin to `at`.
pub fn micros_since_origin(at: Instant) -> u64 {
    let origin = *ORIGIN.get_or_init(Instant::now);
    at.saturating_duration_since(origin).as_micros() as u64
}

/// Records event `name` as happening now. Prefer [`event!`], which skips building the
/// fields when no file is open.
pub fn emit(name: &'static str, fields: &[(&str, Value)]) {
    emit_at(name, Instant::now(), fields)
}

/// Records event `name` as having happened at `at` (e.g. a timestamp taken by a reader
/// thread when a byte arrived).
pub fn emit_at(name: &'static str, at: Instant, fields: &[(&str, Value)]) {
    let t_us = micros_since_origin(at);
    note_latest(name, t_us);
    if !file_enabled() {
        return;
    }
    let line = render(name, t_us, unix_us(), fields);
    if let Some(f) = lock(&FILE).as_mut() {
        // One write per line: concurrent writers (other threads, other processes
        // appending to the same file) never interleave within a line.
        let _ = f.write_all(line.as_bytes());
    }
}

fn note_latest(name: &'static str, t_us: u64) {
    let mut l = lock(&LATEST);
    match l.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = t_us,
        None => l.push((name, t_us)),
    }
}

/// The last time (µs since the process start) of every event seen so far.
pub fn latest() -> Vec<(&'static str, u64)> {
    lock(&LATEST).clone()
}

fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// One JSON line: `{"t_us":..,"unix_us":..,"event":"..",<fields>}\n`. A field named
/// like a fixed key is dropped rather than allowed to hide it.
pub fn render(name: &str, t_us: u64, unix_us: u64, fields: &[(&str, Value)]) -> String {
    let mut m = serde_json::Map::with_capacity(fields.len() + 3);
    m.insert("t_us".into(), t_us.into());
    m.insert("unix_us".into(), unix_us.into());
    m.insert("event".into(), name.into());
    for (k, v) in fields {
        if !m.contains_key(*k) {
            m.insert((*k).to_string(), v.clone());
        }
    }
    let mut s = Value::Object(m).to_string();
    s.push('\n');
    s
}

/// Records a phase event: `event!("engine.spawned", pid = 42, vm = &id)`. The fields
/// (anything `serde_json::Value: From`) are evaluated only when a trace file is open.
#[macro_export]
macro_rules! event {
    ($name:expr $(, $key:ident = $value:expr)* $(,)?) => {
        if $crate::file_enabled() {
            $crate::emit($name, &[$((stringify!($key), $crate::Value::from($value))),*]);
        } else {
            $crate::emit($name, &[]);
        }
    };
}

/// [`event!`] for a moment already past: `event_at!("guest.boot_signal", at, ...)`.
#[macro_export]
macro_rules! event_at {
    ($name:expr, $at:expr $(, $key:ident = $value:expr)* $(,)?) => {
        if $crate::file_enabled() {
            $crate::emit_at($name, $at, &[$((stringify!($key), $crate::Value::from($value))),*]);
        } else {
            $crate::emit_at($name, $at, &[]);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_line_is_one_json_object_with_the_fixed_keys_first() {
        let line = render(
            "engine.spawned",
            1500,
            99,
            &[("pid", Value::from(7)), ("event", Value::from("hidden"))],
        );
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["t_us"], 1500);
        assert_eq!(v["unix_us"], 99);
        assert_eq!(v["event"], "engine.spawned");
        assert_eq!(v["pid"], 7);
    }

    /// The file and the latest-times table are process-wide: one test drives both.
    #[test]
    fn events_reach_the_file_in_order_and_the_latest_table() {
        init();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.jsonl");
        event!("test.before_file");
        open_file(&path).unwrap();
        assert!(file_enabled());
        event!("test.one", n = 1, what = "x");
        let earlier = Instant::now() - Duration::from_millis(5);
        event_at!("test.two", earlier, n = 2);
        event!("test.one", n = 3);
        close_file();
        event!("test.after_file");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let names: Vec<&str> = lines.iter().map(|v| v["event"].as_str().unwrap()).collect();
        assert_eq!(names, ["process.start", "test.one", "test.two", "test.one"]);
        assert_eq!(lines[0]["t_us"], 0);
        let lines = &lines[1..];
        assert_eq!(lines[0]["what"], "x");
        assert_eq!(lines[2]["n"], 3);
        // An event given an earlier moment carries that moment.
        assert!(lines[1]["t_us"].as_u64() < lines[0]["t_us"].as_u64());
        let latest = latest();
        let t = |n: &str| latest.iter().find(|(k, _)| *k == n).map(|(_, t)| *t);
        assert!(t("process.start").is_some());
        assert!(t("test.before_file").is_some() && t("test.after_file").is_some());
        assert_eq!(t("test.one"), lines[2]["t_us"].as_u64());
        assert!(open_file(&dir.path().join("no/such/dir/x")).is_err());
    }
}
