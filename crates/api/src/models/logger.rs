use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Body of `PUT /logger` (`Logger`) and the config file's `logger`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<LevelFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// A log level. Parsed case-insensitively and accepting both `Warn` and `Warning`, as
/// Firecracker does for compatibility; written back with the spec's spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelFilter {
    Off,
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LevelFilter {
    /// Parses a level name the way Firecracker's `--level` and `PUT /logger` do.
    pub fn parse(s: &str) -> Option<LevelFilter> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" => LevelFilter::Off,
            "trace" => LevelFilter::Trace,
            "debug" => LevelFilter::Debug,
            "info" => LevelFilter::Info,
            "warn" | "warning" => LevelFilter::Warn,
            "error" => LevelFilter::Error,
            _ => return None,
        })
    }

    /// The spec's name for the level.
    pub fn as_str(self) -> &'static str {
        match self {
            LevelFilter::Off => "Off",
            LevelFilter::Trace => "Trace",
            LevelFilter::Debug => "Debug",
            LevelFilter::Info => "Info",
            LevelFilter::Warn => "Warning",
            LevelFilter::Error => "Error",
        }
    }

    pub fn to_log(self) -> log::LevelFilter {
        match self {
            LevelFilter::Off => log::LevelFilter::Off,
            LevelFilter::Trace => log::LevelFilter::Trace,
            LevelFilter::Debug => log::LevelFilter::Debug,
            LevelFilter::Info => log::LevelFilter::Info,
            LevelFilter::Warn => log::LevelFilter::Warn,
            LevelFilter::Error => log::LevelFilter::Error,
        }
    }
}

impl fmt::Display for LevelFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LevelFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LevelFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LevelFilter::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid log level `{s}`: expected one of Error, Warning, Info, Debug, Trace, Off"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_case_insensitively_and_print_the_spec_spelling() {
        for (s, l) in [
            ("OFF", LevelFilter::Off),
            ("trace", LevelFilter::Trace),
            ("Debug", LevelFilter::Debug),
            ("iNfO", LevelFilter::Info),
            ("warn", LevelFilter::Warn),
            ("Warning", LevelFilter::Warn),
            ("ERROR", LevelFilter::Error),
        ] {
            assert_eq!(LevelFilter::parse(s), Some(l));
            let back: LevelFilter =
                serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
            assert_eq!(back, l);
        }
        assert_eq!(
            serde_json::to_string(&LevelFilter::Warn).unwrap(),
            "\"Warning\""
        );
        assert_eq!(LevelFilter::Warn.to_string(), "Warning");
        assert_eq!(LevelFilter::Error.to_log(), log::LevelFilter::Error);
        let err = serde_json::from_str::<LevelFilter>("\"loud\"").unwrap_err();
        assert!(
            err.to_string().contains("invalid log level `loud`"),
            "{err}"
        );
    }
}
