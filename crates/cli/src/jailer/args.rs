//! Firecracker's jailer command line, unchanged: what the Go SDK's `JailerConfig` and
//! Kata's `jailer_path` pass.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;

/// `jailer --id ID --exec-file F --uid U --gid G [...] -- <VMM args>`.
#[derive(Debug, Parser, Clone, PartialEq)]
#[command(
    name = "jailer",
    about = "Firecracker's jailer for ec1: runs the VMM in a chroot, as an unprivileged user, in the cgroups and network namespace given"
)]
pub struct JailerArgs {
    /// The microVM's id (letters, digits and '-', at most 64).
    #[arg(long)]
    pub id: String,
    /// The VMM binary (ec1, or a name Firecracker clients use for it); copied into the jail.
    #[arg(long)]
    pub exec_file: PathBuf,
    #[arg(long)]
    pub uid: u32,
    #[arg(long)]
    pub gid: u32,
    /// The jail is `<chroot-base-dir>/<exec-file name>/<id>/root`.
    #[arg(long, default_value = "/srv/jailer")]
    pub chroot_base_dir: PathBuf,
    /// A network namespace to join (`/var/run/netns/NAME`).
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// Detach: a new session, stdio on /dev/null.
    #[arg(long)]
    pub daemonize: bool,
    /// Run the VMM in a new PID namespace (the jailer writes its pid to
    /// `<exec-file name>.pid` in the jail and exits).
    #[arg(long)]
    pub new_pid_ns: bool,
    /// 1 or 2.
    #[arg(long, default_value_t = 1)]
    pub cgroup_version: u8,
    /// `<file>=<value>`, e.g. `cpuset.cpus=0` (repeatable).
    #[arg(long = "cgroup", value_name = "FILE=VALUE")]
    pub cgroups: Vec<String>,
    /// The cgroup under which `<id>` is made (default: the exec file's name).
    #[arg(long)]
    pub parent_cgroup: Option<String>,
    /// `fsize=<bytes>` or `no-file=<count>` (repeatable).
    #[arg(long = "resource-limit", value_name = "RESOURCE=VALUE")]
    pub resource_limits: Vec<String>,
    /// The VMM's own arguments, after `--`.
    #[arg(last = true)]
    pub vmm_args: Vec<OsString>,
}

/// Firecracker's rule for `--id`: 1 to 64 letters, digits or '-'.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!(
            "Invalid instance ID: {id}: it must be 1 to 64 characters long"
        ));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!(
            "Invalid instance ID: {id}: only letters, digits and '-' are allowed"
        ));
    }
    Ok(())
}

/// `KEY=VALUE`.
pub fn key_value(s: &str) -> Result<(&str, &str), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k, v)),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecrackers_command_line_parses() {
        let a = JailerArgs::try_parse_from([
            "jailer",
            "--id",
            "vm-1",
            "--exec-file",
            "/usr/bin/firecracker",
            "--uid",
            "123",
            "--gid",
            "100",
            "--cgroup",
            "cpuset.cpus=0",
            "--cgroup",
            "memory.limit_in_bytes=1000000",
            "--resource-limit",
            "no-file=1024",
            "--netns",
            "/var/run/netns/n",
            "--daemonize",
            "--new-pid-ns",
            "--",
            "--api-sock",
            "/run/api.sock",
        ])
        .unwrap();
        assert_eq!(a.id, "vm-1");
        assert_eq!(a.chroot_base_dir, PathBuf::from("/srv/jailer"));
        assert_eq!(a.cgroup_version, 1);
        assert_eq!(a.cgroups.len(), 2);
        assert_eq!(a.vmm_args, ["--api-sock", "/run/api.sock"]);
        assert!(a.daemonize && a.new_pid_ns);
        assert!(JailerArgs::try_parse_from(["jailer", "--id", "x"]).is_err());
    }

    #[test]
    fn ids_and_pairs_are_checked_as_firecracker_does() {
        check_id("a-1").unwrap();
        check_id(&"a".repeat(64)).unwrap();
        assert!(check_id("").is_err());
        assert!(check_id(&"a".repeat(65)).is_err());
        assert!(check_id("a/b").unwrap_err().contains("Invalid instance ID"));
        assert!(check_id("a_b").is_err());
        assert_eq!(key_value("a.b=1").unwrap(), ("a.b", "1"));
        assert!(key_value("a").is_err() && key_value("=1").is_err() && key_value("a=").is_err());
    }
}
