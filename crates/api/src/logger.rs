//! Firecracker's logger: lines `TIME [ID:THREAD(:LEVEL)(:FILE:LINE)] MESSAGE` written
//! to stdout or, after `PUT /logger` / `--log-path`, to a file or named pipe opened
//! without creating it, read-write and `O_NONBLOCK` (so a FIFO without a reader never
//! blocks the VMM), exactly as Firecracker's `Logger::update` opens it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::clock::local_time_string;
use crate::models::LoggerConfig;

/// Lines that could not be written (Firecracker's `logger.missed_log_count`), process-wide
/// like Firecracker's `METRICS`.
pub static MISSED_LOG_COUNT: AtomicU64 = AtomicU64::new(0);

/// Firecracker's default log level.
pub const DEFAULT_LEVEL: log::LevelFilter = log::LevelFilter::Info;

#[derive(Debug)]
struct LoggerState {
    target: Option<File>,
    level: log::LevelFilter,
    show_level: bool,
    show_log_origin: bool,
    module: Option<String>,
}

/// One instance's logger.
#[derive(Debug)]
pub struct Logger {
    instance_id: String,
    state: Mutex<LoggerState>,
}

impl Logger {
    pub fn new(instance_id: impl Into<String>) -> Self {
        Logger {
            instance_id: instance_id.into(),
            state: Mutex::new(LoggerState {
                target: None,
                level: DEFAULT_LEVEL,
                show_level: false,
                show_log_origin: false,
                module: None,
            }),
        }
    }

    /// Applies `cfg`; fields left out keep their value. Fails, changing nothing, when the
    /// target cannot be opened.
    pub fn configure(&self, cfg: &LoggerConfig) -> Result<(), String> {
        let target = match &cfg.log_path {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .custom_flags(libc::O_NONBLOCK)
                    .read(true)
                    .write(true)
                    .open(p)
                    .map_err(|e| format!("Failed to open target file: {e}"))?,
            ),
            None => None,
        };
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.level = cfg.level.map(|l| l.to_log()).unwrap_or(DEFAULT_LEVEL);
        if target.is_some() {
            s.target = target;
        }
        if let Some(v) = cfg.show_level {
            s.show_level = v;
        }
        if let Some(v) = cfg.show_log_origin {
            s.show_log_origin = v;
        }
        if let Some(m) = &cfg.module {
            s.module = Some(m.clone());
        }
        Ok(())
    }

    /// The current level filter.
    pub fn level(&self) -> log::LevelFilter {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).level
    }

    /// Formats and writes one record if the level and module filters let it through.
    pub fn write_record(&self, record: &log::Record<'_>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if record.level() > s.level {
            return;
        }
        if let Some(filter) = &s.module {
            if !record.module_path().is_some_and(|m| m.starts_with(filter)) {
                return;
            }
        }
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("-");
        let level = if s.show_level {
            format!(":{}", record.level())
        } else {
            String::new()
        };
        let origin = if s.show_log_origin {
            format!(
                ":{}:{}",
                record.file().unwrap_or("?"),
                record
                    .line()
                    .map_or_else(|| "?".to_string(), |l| l.to_string())
            )
        } else {
            String::new()
        };
        let line = format!(
            "{} [{}:{thread}{level}{origin}] {}\n",
            local_time_string(),
            self.instance_id,
            record.args()
        );
        let res = match &mut s.target {
            Some(f) => f.write_all(line.as_bytes()),
            None => std::io::stdout().write_all(line.as_bytes()),
        };
        if res.is_err() {
            MISSED_LOG_COUNT.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Logs `args` at `level` from `module` (used where a `log` macro cannot name this
    /// instance, e.g. in tests running several VMMs in one process).
    pub fn log_at(&self, level: log::Level, module: &str, args: std::fmt::Arguments<'_>) {
        self.write_record(
            &log::Record::builder()
                .level(level)
                .module_path(Some(module))
                .file(Some(file!()))
                .line(Some(line!()))
                .args(args)
                .build(),
        );
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level()
    }
    fn log(&self, record: &log::Record<'_>) {
        self.write_record(record);
    }
    fn flush(&self) {}
}

/// The process-wide `log` facade: forwards to the logger of the running instance, so
/// every crate's `log::info!` (the engine's too) ends up in Firecracker's format.
struct Facade;

static CURRENT: RwLock<Option<Arc<Logger>>> = RwLock::new(None);
static FACADE: Facade = Facade;

impl log::Log for Facade {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        CURRENT
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|l| l.enabled(metadata)))
            .unwrap_or(false)
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(c) = CURRENT.read() {
            if let Some(l) = c.as_ref() {
                l.write_record(record);
            }
        }
    }
    fn flush(&self) {}
}

/// Routes the `log` crate's macros to `logger`. Safe to call more than once: the last
/// call wins.
pub fn install_global(logger: Arc<Logger>) {
    if let Ok(mut c) = CURRENT.write() {
        *c = Some(logger);
    }
    // Fails only if another logger was installed first; then ours is never called,
    // which cannot be fixed from here and does not stop the VMM.
    let _ = log::set_logger(&FACADE);
    log::set_max_level(log::LevelFilter::Trace);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::LevelFilter;

    fn read(p: &std::path::Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    #[test]
    fn lines_have_firecrackers_format() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let l = Logger::new("vm-7");
        l.configure(&LoggerConfig {
            log_path: Some(f.path().into()),
            level: Some(LevelFilter::Debug),
            show_level: Some(true),
            show_log_origin: Some(true),
            module: None,
        })
        .unwrap();
        std::thread::Builder::new()
            .name("fc_api".into())
            .spawn({
                let l = Arc::new(l);
                move || {
                    l.write_record(
                        &log::Record::builder()
                            .level(log::Level::Warn)
                            .file(Some("src/x.rs"))
                            .line(Some(12))
                            .module_path(Some("ec1_api::x"))
                            .args(format_args!("hello {}", 1))
                            .build(),
                    );
                    l.write_record(
                        &log::Record::builder()
                            .level(log::Level::Trace)
                            .args(format_args!("filtered"))
                            .build(),
                    );
                }
            })
            .unwrap()
            .join()
            .unwrap();
        let out = read(f.path());
        let (time, rest) = out.split_once(' ').unwrap();
        assert_eq!(time.len(), 29);
        assert_eq!(rest, "[vm-7:fc_api:WARN:src/x.rs:12] hello 1\n");
    }

    #[test]
    fn defaults_module_filter_and_missing_file() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let l = Logger::new("i");
        assert_eq!(l.level(), log::LevelFilter::Info);
        let err = l
            .configure(&LoggerConfig {
                log_path: Some("/nonexistent/log".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.starts_with("Failed to open target file: "), "{err}");
        l.configure(&LoggerConfig {
            log_path: Some(f.path().into()),
            module: Some("keep".into()),
            ..Default::default()
        })
        .unwrap();
        l.log_at(log::Level::Info, "drop::me", format_args!("no"));
        l.log_at(log::Level::Info, "keep::me", format_args!("yes"));
        l.log_at(log::Level::Debug, "keep::me", format_args!("too verbose"));
        let out = read(f.path());
        assert!(
            out.ends_with("[i:-] yes\n") || out.contains("] yes\n"),
            "{out}"
        );
        assert!(!out.contains("no\n") && !out.contains("verbose"), "{out}");
        l.configure(&LoggerConfig {
            level: Some(LevelFilter::Off),
            ..Default::default()
        })
        .unwrap();
        l.log_at(log::Level::Error, "keep::me", format_args!("silenced"));
        assert!(!read(f.path()).contains("silenced"));
    }

    #[test]
    fn the_global_facade_forwards_to_the_installed_logger() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let l = Arc::new(Logger::new("global-test"));
        l.configure(&LoggerConfig {
            log_path: Some(f.path().into()),
            module: Some("ec1_api::logger::tests".into()),
            ..Default::default()
        })
        .unwrap();
        install_global(l.clone());
        log::info!("through the facade");
        assert!(log::logger().enabled(&log::Metadata::builder().level(log::Level::Info).build()));
        assert!(read(f.path()).contains("through the facade"));
    }
}
