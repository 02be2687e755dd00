//! The kernel command line keys the agent reads.
//!
//! | key | meaning | default |
//! | --- | --- | --- |
//! | `ec1.mode=initramfs\|root\|handoff` | where commands run / who is PID 1 | `root` if a root device is given, else `initramfs` |
//! | `ec1.root=DEV` (else `root=DEV`) | root drive to mount, e.g. `/dev/vda`, or `PARTUUID=0eaa91a0-01[/PARTNROFF=n]` (MBR or GPT, see `root::partuuid`) | none |
//! | `ec1.rootfstype=T` (else `rootfstype=`) | its filesystem type | every type in `/proc/filesystems`, in turn |
//! | `ec1.rootflags=O` (else `rootflags=`) | mount data, e.g. `discard` | none |
//! | `ro` / `rw` | mount the root drive read-only / read-write | `ro` unless `rw` |
//! | `ec1.init=PATH` (else `init=`) | the image's init for hand-off | `/sbin/init` |
//! | `ec1.hostname=NAME` | the guest's host name | `ec1` |
//! | `ec1.port=NAME` | virtio-serial port name of the agent channel | `ec1.agent` |
//! | `ec1.debug` | log routine events to the console | off |

/// Where commands run and who is PID 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Commands run in the initramfs; the agent is PID 1.
    Initramfs,
    /// The root drive is mounted and becomes `/` for the agent (PID 1) and commands.
    Root,
    /// As `Root`, but the image's own init becomes PID 1 and the agent runs beside it.
    Handoff,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Initramfs => "initramfs",
            Mode::Root => "root",
            Mode::Handoff => "handoff",
        }
    }
}

/// What the command line asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    pub mode: Mode,
    pub root: Option<String>,
    pub rootfstype: Option<String>,
    pub rootflags: Option<String>,
    pub read_only: bool,
    pub init: String,
    pub hostname: String,
    pub port: String,
    pub debug: bool,
    /// Problems found while parsing (reported on the console, then ignored).
    pub warnings: Vec<String>,
}

/// The port name the host side (ec1's engines) gives the agent channel.
pub const DEFAULT_PORT: &str = ec1_proto::channel::AGENT_PORT;

/// Parses a kernel command line. Quoting (`key="a b"`) is honoured as the kernel does.
pub fn parse(cmdline: &str) -> BootConfig {
    let mut get = std::collections::HashMap::new();
    let mut flags = std::collections::HashSet::new();
    for word in split(cmdline) {
        match word.split_once('=') {
            Some((k, v)) => {
                get.insert(k.to_string(), v.trim_matches('"').to_string());
            }
            None => {
                flags.insert(word);
            }
        }
    }
    let pick = |a: &str, b: &str| get.get(a).or_else(|| get.get(b)).cloned();
    let root = pick("ec1.root", "root").filter(|r| !r.is_empty());
    let mut warnings = Vec::new();
    let mode = match get.get("ec1.mode").map(String::as_str) {
        Some("initramfs") => Mode::Initramfs,
        Some("root") => Mode::Root,
        Some("handoff") => Mode::Handoff,
        other => {
            if let Some(o) = other {
                warnings.push(format!(
                    "unknown ec1.mode={o:?} (expected initramfs, root or handoff)"
                ));
            }
            if root.is_some() {
                Mode::Root
            } else {
                Mode::Initramfs
            }
        }
    };
    if mode == Mode::Root && root.is_none() {
        warnings.push("ec1.mode=root needs ec1.root=DEVICE; staying in the initramfs".into());
    }
    BootConfig {
        mode: if mode == Mode::Root && root.is_none() {
            Mode::Initramfs
        } else {
            mode
        },
        root,
        rootfstype: pick("ec1.rootfstype", "rootfstype"),
        rootflags: pick("ec1.rootflags", "rootflags"),
        read_only: !flags.contains("rw"),
        init: pick("ec1.init", "init").unwrap_or_else(|| "/sbin/init".into()),
        hostname: get
            .get("ec1.hostname")
            .cloned()
            .unwrap_or_else(|| "ec1".into()),
        port: get
            .get("ec1.port")
            .cloned()
            .unwrap_or_else(|| DEFAULT_PORT.into()),
        debug: flags.contains("ec1.debug") || get.get("ec1.debug").is_some_and(|v| v != "0"),
        warnings,
    }
}

/// Splits on spaces outside double quotes.
fn split(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_initramfs_mode() {
        let c = parse("console=ttyS0 reboot=k panic=-1 quiet\n");
        assert_eq!(c.mode, Mode::Initramfs);
        assert_eq!(c.root, None);
        assert!(c.read_only);
        assert_eq!(c.init, "/sbin/init");
        assert_eq!(c.hostname, "ec1");
        assert_eq!(c.port, DEFAULT_PORT);
        assert!(!c.debug);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn ec1_keys_win_over_the_standard_ones() {
        let c = parse(
            "root=/dev/vdb ec1.root=/dev/vda rootfstype=xfs ec1.rootfstype=ext4 rw \
             init=/bin/sh ec1.init=/lib/systemd/systemd ec1.mode=handoff ec1.hostname=box \
             ec1.port=p2 ec1.debug rootflags=discard",
        );
        assert_eq!(c.mode, Mode::Handoff);
        assert_eq!(c.root.as_deref(), Some("/dev/vda"));
        assert_eq!(c.rootfstype.as_deref(), Some("ext4"));
        assert_eq!(c.rootflags.as_deref(), Some("discard"));
        assert!(!c.read_only);
        assert_eq!(c.init, "/lib/systemd/systemd");
        assert_eq!(c.hostname, "box");
        assert_eq!(c.port, "p2");
        assert!(c.debug);
        assert_eq!(Mode::Handoff.as_str(), "handoff");
    }

    #[test]
    fn a_standard_root_means_root_mode() {
        let c = parse("root=/dev/vda ro");
        assert_eq!(c.mode, Mode::Root);
        assert_eq!(c.root.as_deref(), Some("/dev/vda"));
        assert_eq!(Mode::Root.as_str(), "root");
        assert_eq!(
            parse("root=/dev/vda ec1.mode=initramfs").mode,
            Mode::Initramfs
        );
        assert_eq!(Mode::Initramfs.as_str(), "initramfs");
    }

    #[test]
    fn bad_values_warn_and_fall_back() {
        let c = parse("ec1.mode=weird");
        assert_eq!(c.mode, Mode::Initramfs);
        assert_eq!(c.warnings.len(), 1);
        let c = parse("ec1.mode=root");
        assert_eq!(c.mode, Mode::Initramfs);
        assert!(c.warnings[0].contains("ec1.root"));
        assert!(!parse("ec1.debug=0").debug);
    }

    #[test]
    fn quotes_keep_spaces() {
        let c = parse(r#"ec1.rootflags="a b" ec1.hostname=x"#);
        assert_eq!(c.rootflags.as_deref(), Some("a b"));
        assert_eq!(c.hostname, "x");
    }
}
