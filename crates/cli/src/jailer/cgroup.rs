//! The jail's cgroups, as Firecracker's jailer makes them: `<parent>/<id>` under each
//! controller named by a `--cgroup FILE=VALUE` (version 1: the controller's own
//! hierarchy; version 2: the unified one), the values written, the process moved in.

use std::path::{Path, PathBuf};

/// Where each cgroup filesystem is mounted, from `/proc/self/mounts`:
/// `(mount point, type, options)`.
fn mounts(text: &str) -> Vec<(PathBuf, String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (PathBuf::from(f[1]), f[2].to_string(), f[3].to_string()))
        })
        .filter(|(_, t, _)| t == "cgroup" || t == "cgroup2")
        .collect()
}

/// The hierarchy `file` (e.g. `cpuset.cpus`) belongs to.
fn hierarchy(
    mounts: &[(PathBuf, String, String)],
    version: u8,
    file: &str,
) -> Result<PathBuf, String> {
    match version {
        1 => {
            let controller = file
                .split_once('.')
                .map(|(c, _)| c)
                .ok_or_else(|| format!("cgroup file {file:?} names no controller"))?;
            mounts
                .iter()
                .find(|(_, t, o)| t == "cgroup" && o.split(',').any(|x| x == controller))
                .map(|(m, _, _)| m.clone())
                .ok_or_else(|| format!("no cgroup v1 hierarchy has the {controller} controller"))
        }
        2 => mounts
            .iter()
            .find(|(_, t, _)| t == "cgroup2")
            .map(|(m, _, _)| m.clone())
            .ok_or_else(|| "no cgroup v2 hierarchy is mounted".into()),
        v => Err(format!("invalid cgroup version {v}: use 1 or 2")),
    }
}

/// Makes `dir` and its missing ancestors below `root`; for cpuset (v1), a new cgroup
/// starts with empty `cpus`/`mems` and takes no task, so they are copied from the
/// parent, as Firecracker's jailer does.
fn make_dirs(root: &Path, dir: &Path) -> Result<(), String> {
    let rel = dir.strip_prefix(root).map_err(|e| e.to_string())?;
    let mut cur = root.to_path_buf();
    for part in rel.components() {
        let parent = cur.clone();
        cur.push(part);
        if !cur.is_dir() {
            std::fs::create_dir(&cur)
                .map_err(|e| format!("creating the cgroup {}: {e}", cur.display()))?;
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(parent.join(f)) {
                    let _ = std::fs::write(cur.join(f), v.trim());
                }
            }
        }
    }
    Ok(())
}

/// Creates the cgroups and moves the process `pid` into them.
pub fn apply(
    version: u8,
    settings: &[String],
    parent: &str,
    id: &str,
    pid: u32,
) -> Result<(), String> {
    if settings.is_empty() {
        return Ok(());
    }
    let table = std::fs::read_to_string("/proc/self/mounts").map_err(|e| e.to_string())?;
    let mounts = mounts(&table);
    let mut joined: Vec<PathBuf> = Vec::new();
    for s in settings {
        let (file, value) = super::args::key_value(s)?;
        let root = hierarchy(&mounts, version, file)?;
        let dir = root.join(parent.trim_matches('/')).join(id);
        make_dirs(&root, &dir)?;
        if version == 2 {
            // The controller must be enabled in every ancestor's subtree.
            let controller = file.split('.').next().unwrap_or(file);
            let mut cur = root.clone();
            for part in dir
                .strip_prefix(&root)
                .map_err(|e| e.to_string())?
                .components()
            {
                let _ =
                    std::fs::write(cur.join("cgroup.subtree_control"), format!("+{controller}"));
                cur.push(part);
            }
        }
        std::fs::write(dir.join(file), value)
            .map_err(|e| format!("writing {value} to {}: {e}", dir.join(file).display()))?;
        if !joined.contains(&dir) {
            let procs = if version == 1 {
                "tasks"
            } else {
                "cgroup.procs"
            };
            std::fs::write(dir.join(procs), pid.to_string())
                .map_err(|e| format!("moving the jailer into {}: {e}", dir.display()))?;
            joined.push(dir);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
proc /proc proc rw 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn each_file_finds_its_hierarchy() {
        let m = mounts(MOUNTS);
        assert_eq!(m.len(), 3);
        assert_eq!(
            hierarchy(&m, 1, "cpuset.cpus").unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpuset")
        );
        assert_eq!(
            hierarchy(&m, 1, "pids.max").unwrap(),
            PathBuf::from("/sys/fs/cgroup/pids")
        );
        assert!(hierarchy(&m, 1, "memory.max")
            .unwrap_err()
            .contains("memory"));
        assert!(hierarchy(&m, 1, "nodot").is_err());
        assert_eq!(
            hierarchy(&m, 2, "memory.max").unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert!(hierarchy(&m, 3, "x.y").unwrap_err().contains("version 3"));
        assert!(hierarchy(&mounts("proc /proc proc rw 0 0"), 2, "x.y").is_err());
        assert!(apply(1, &[], "p", "i", 1).is_ok());
    }

    #[test]
    fn parents_are_made_with_cpusets_copied() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cpuset.cpus"), "0-1\n").unwrap();
        let dir = d.path().join("ec1/vm");
        make_dirs(d.path(), &dir).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("ec1/cpuset.cpus")).unwrap(),
            "0-1"
        );
        assert!(dir.is_dir());
        make_dirs(d.path(), &dir).unwrap();
        assert!(make_dirs(&d.path().join("elsewhere"), &dir).is_err());
    }
}
