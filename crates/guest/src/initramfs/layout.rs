//! What goes into the agent archive, and where.

use super::newc::NewcWriter;

/// Where busybox lives in the guest; applet links point here.
pub const BUSYBOX_PATH: &str = "/.ec1/bin/busybox";

/// The two shapes of the agent archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The guest's whole initramfs: standard directories and `/bin/sh`-style links.
    Standalone,
    /// Appended to a user's initrd: only `/init`, `/.ec1` and `/dev/console`, so
    /// nothing of the user's image but `/init` is replaced.
    Overlay,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Standalone => "standalone",
            Layout::Overlay => "overlay",
        }
    }
}

/// Builds the archive. `applets` are busybox's `--list-full` paths (`bin/sh`,
/// `usr/bin/awk`, ...); each gets a link in `/.ec1/bin` and, standalone, at its path.
pub fn build_archive(agent: &[u8], busybox: &[u8], applets: &[String], layout: Layout) -> Vec<u8> {
    let mut w = NewcWriter::new();
    let standard_dirs: &[&str] = match layout {
        Layout::Standalone => &[
            "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev",
            "tmp", "run", "mnt", "var", "var/tmp",
        ],
        Layout::Overlay => &["dev"],
    };
    for d in standard_dirs {
        let perm = if d.ends_with("tmp") { 0o1777 } else { 0o755 };
        w.dir(d, perm);
    }
    w.char_dev("dev/console", 0o600, 5, 1);
    w.char_dev("dev/null", 0o666, 1, 3);
    w.dir(".ec1", 0o755);
    w.dir(".ec1/bin", 0o755);
    w.file(&BUSYBOX_PATH[1..], 0o755, busybox);
    let mut names: Vec<&str> = applets
        .iter()
        .filter_map(|a| a.rsplit('/').next())
        .filter(|n| !n.is_empty() && *n != "busybox")
        .collect();
    names.sort_unstable();
    names.dedup();
    for n in &names {
        w.symlink(&format!(".ec1/bin/{n}"), "busybox");
    }
    if layout == Layout::Standalone {
        for a in applets {
            // Only applets in a directory (`linuxrc` at the top would be a stray file).
            // `sbin/init` stays out too: /init is the agent, and a busybox init at
            // /sbin/init would be picked by `ec1.mode=handoff` by mistake.
            if a.contains('/') && a != "sbin/init" && a.rsplit('/').next() != Some("busybox") {
                w.symlink(a, BUSYBOX_PATH);
            }
        }
        w.file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        );
        w.file(
            "etc/group",
            0o644,
            b"root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
        );
        w.file("etc/hosts", 0o644, b"127.0.0.1\tlocalhost\n");
    }
    w.file("init", 0o755, agent);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::super::newc::parse;
    use super::*;

    fn applets() -> Vec<String> {
        [
            "bin/sh",
            "usr/bin/awk",
            "linuxrc",
            "sbin/init",
            "bin/busybox",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn standalone_has_a_shell_and_the_agent_as_init() {
        let a = build_archive(b"AGENT", b"BUSYBOX", &applets(), Layout::Standalone);
        let e = parse(&a).unwrap();
        let find = |n: &str| e.iter().find(|x| x.0 == n).cloned();
        assert_eq!(find("init").unwrap().3, b"AGENT");
        assert_eq!(find(".ec1/bin/busybox").unwrap().3, b"BUSYBOX");
        assert_eq!(find("bin/sh").unwrap().3, BUSYBOX_PATH.as_bytes());
        assert_eq!(find("usr/bin/awk").unwrap().3, BUSYBOX_PATH.as_bytes());
        assert_eq!(find(".ec1/bin/awk").unwrap().3, b"busybox");
        assert!(find("linuxrc").is_none());
        assert!(find("sbin/init").is_none());
        assert!(find("bin/busybox").is_none());
        assert_eq!(find("dev/console").unwrap().2, (5, 1));
        assert_eq!(find("tmp").unwrap().1 & 0o7777, 0o1777);
        assert!(find("etc/passwd").is_some());
        // Parents come before children.
        let pos = |n: &str| e.iter().position(|x| x.0 == n).unwrap();
        assert!(pos("usr") < pos("usr/bin") && pos("usr/bin") < pos("usr/bin/awk"));
        assert_eq!(Layout::Standalone.name(), "standalone");
    }

    #[test]
    fn overlay_leaves_the_users_tree_alone() {
        let a = build_archive(b"AGENT", b"BUSYBOX", &applets(), Layout::Overlay);
        let e = parse(&a).unwrap();
        for x in &e {
            assert!(
                x.0 == "init" || x.0 == "dev" || x.0.starts_with("dev/") || x.0.starts_with(".ec1"),
                "overlay touches {}",
                x.0
            );
        }
        assert_eq!(Layout::Overlay.name(), "overlay");
    }
}
