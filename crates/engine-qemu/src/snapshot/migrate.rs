//! The QMP side of snapshots: QEMU's migration to and from a file.
//!
//! Both directions set the `x-ignore-shared` capability: RAM blocks that are shared
//! named files (guest RAM started for snapshotting) are left out of the stream, so the
//! device state is ~50 KB whatever the guest's size, and a restore maps RAM from the
//! memory file instead of reading it. The stream goes through QEMU's `file` transport
//! with an offset, straight into (and out of) ec1's snapshot file after its header.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use ec1_engine::EngineError;
use qapi::qmp::{
    migrate, migrate_incoming, migrate_set_capabilities, query_migrate, query_status,
    FileMigrationArgs, MigrationAddress, MigrationCapability, MigrationCapabilityStatus,
    MigrationChannel, MigrationChannelType, MigrationStatus, RunState,
};

use crate::qmp::QmpClient;

/// How long a migration to or from a file may take: the device state is small, but a
/// loaded host may be slow.
pub const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the migration status is polled.
const POLL: Duration = Duration::from_millis(1);

/// Where the device state is, for a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The snapshot file.
    pub path: std::path::PathBuf,
    /// Where QEMU's stream starts in it.
    pub offset: u64,
    /// Start the vCPUs once loaded.
    pub resume: bool,
}

fn channel(path: &Path, offset: u64) -> Result<Vec<MigrationChannel>, EngineError> {
    let filename = path.to_str().ok_or_else(|| {
        EngineError::InvalidSpec(format!(
            "the snapshot path {} is not valid UTF-8, which QEMU's migration needs: rename it",
            path.display()
        ))
    })?;
    Ok(vec![MigrationChannel {
        channel_type: MigrationChannelType::main,
        addr: MigrationAddress::file(FileMigrationArgs {
            filename: filename.into(),
            offset,
        }),
    }])
}

fn ignore_shared(qmp: &mut QmpClient) -> Result<(), EngineError> {
    qmp.execute(&migrate_set_capabilities {
        capabilities: vec![MigrationCapabilityStatus {
            capability: MigrationCapability::x_ignore_shared,
            state: true,
        }],
    })?;
    Ok(())
}

/// Waits for the current migration to complete; `what` names it in errors.
fn wait_done(qmp: &mut QmpClient, what: &str, timeout: Duration) -> Result<(), EngineError> {
    let deadline = Instant::now() + timeout;
    loop {
        let info = qmp.execute(&query_migrate {})?;
        match info.status {
            Some(MigrationStatus::completed) => return Ok(()),
            Some(MigrationStatus::failed | MigrationStatus::cancelled) => {
                return Err(EngineError::Control(format!(
                    "QEMU could not {what}: {}",
                    info.error_desc.unwrap_or_else(|| "no reason given".into())
                )))
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(EngineError::Timeout(timeout, format!("QEMU to {what}")));
        }
        std::thread::sleep(POLL);
    }
}

/// Fails unless the guest is paused, as Firecracker requires before a snapshot.
pub fn ensure_paused(qmp: &mut QmpClient) -> Result<(), EngineError> {
    let st = qmp.execute(&query_status {})?;
    match st.status {
        RunState::paused => Ok(()),
        RunState::postmigrate => Err(EngineError::InvalidState(
            "the guest has been snapshotted since it last ran, and QEMU snapshots a paused \
             guest only once: resume it (and pause it again) before the next snapshot"
                .into(),
        )),
        _ if st.running => Err(EngineError::InvalidState(
            "the guest is running: pause it before taking a snapshot".into(),
        )),
        other => Err(EngineError::InvalidState(format!(
            "the guest cannot be snapshotted in QEMU state {other:?}"
        ))),
    }
}

/// Writes the device state of the paused guest into `path` from `offset` on.
pub fn save_state(qmp: &mut QmpClient, path: &Path, offset: u64) -> Result<(), EngineError> {
    ignore_shared(qmp)?;
    qmp.execute(&migrate {
        channels: Some(channel(path, offset)?),
        detach: None,
        resume: None,
        uri: None,
    })?;
    wait_done(qmp, "save the device state", MIGRATION_TIMEOUT)
}

/// Loads the device state into a QEMU started with `-incoming defer`; the guest stays
/// paused (the caller sends `cont` if [`Incoming::resume`]).
pub fn load_state(qmp: &mut QmpClient, incoming: &Incoming) -> Result<(), EngineError> {
    ignore_shared(qmp)?;
    qmp.execute(&migrate_incoming {
        channels: Some(channel(&incoming.path, incoming.offset)?),
        // Report a bad stream over QMP instead of exiting with it on stderr.
        exit_on_error: Some(false),
        uri: None,
    })?;
    wait_done(qmp, "load the device state", MIGRATION_TIMEOUT)
}

/// QEMU options that take no value (every other option takes one).
const FLAGS: &[&str] = &["-nodefaults", "-no-user-config", "-no-reboot", "-S"];
/// Options only a boot needs: on a restore the kernel is already in guest RAM.
const BOOT_ONLY: &[&str] = &["-kernel", "-initrd", "-append"];

/// Turns a boot command line into a restore command line: without the kernel, initrd
/// and kernel arguments (so a restore needs none of those files, and QEMU does not
/// load an 18 MB ELF only to overwrite it), waiting for `migrate-incoming`.
pub fn incoming_args(boot: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(boot.len() + 2);
    let mut it = boot.into_iter();
    while let Some(arg) = it.next() {
        let s = arg.to_str().unwrap_or("");
        if FLAGS.contains(&s) {
            out.push(arg);
            continue;
        }
        let value = it.next();
        if BOOT_ONLY.contains(&s) {
            continue;
        }
        out.push(arg);
        out.extend(value);
    }
    out.push("-incoming".into());
    out.push("defer".into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn restores_drop_the_boot_options_and_wait_for_the_state() {
        let boot = argv(&[
            "-M",
            "microvm",
            "-nodefaults",
            "-S",
            "-bios",
            "/fw",
            "-kernel",
            "/k",
            "-initrd",
            "/i",
            "-drive",
            "-kernel",
            "-append",
            "console=ttyS0",
            "-no-reboot",
        ]);
        assert_eq!(
            incoming_args(boot),
            argv(&[
                "-M",
                "microvm",
                "-nodefaults",
                "-S",
                "-bios",
                "/fw",
                "-drive",
                "-kernel",
                "-no-reboot",
                "-incoming",
                "defer",
            ]),
            "a value that looks like an option stays a value"
        );
    }

    #[test]
    fn channels_need_utf8_paths() {
        use std::os::unix::ffi::OsStringExt;
        let p = std::path::PathBuf::from(OsString::from_vec(b"/s/\xff".to_vec()));
        assert!(channel(&p, 0).unwrap_err().to_string().contains("UTF-8"));
        let c = channel(Path::new("/s/a,b"), 4096).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"channel-type": "main",
                "addr": {"transport": "file", "filename": "/s/a,b", "offset": 4096}}])
        );
    }
}
