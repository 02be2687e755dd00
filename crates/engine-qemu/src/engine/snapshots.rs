//! [`Engine::snapshot`](ec1_engine::Engine::snapshot) and
//! [`Engine::restore`](ec1_engine::Engine::restore) for [`QemuEngine`]; the pieces are
//! in [`crate::snapshot`].

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ec1_engine::{EngineError, EventSink, MemoryBacking, SnapshotSource, SnapshotTarget, VmSpec};

use super::{lock, QemuEngine};
use crate::snapshot::format::{SnapshotFile, Writer};
use crate::snapshot::machine::{EngineFacts, Machine};
use crate::snapshot::memfile::{copy_memory, temp_beside};
use crate::snapshot::migrate::{ensure_paused, save_state, Incoming};
use crate::validate::{check_spec, QMP_SOCKET};

fn file_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> EngineError + 'a {
    move |source| EngineError::File {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Checks the memory file of a restore: a file of exactly the guest's RAM size (QEMU
/// would grow a shorter one, i.e. write to it, and a longer one is not this guest's).
fn check_mem_file(path: &Path, mem_mib: u32) -> Result<(), EngineError> {
    let meta = std::fs::metadata(path).map_err(file_err("snapshot memory file", path))?;
    let want = u64::from(mem_mib) << 20;
    if !meta.is_file() || meta.len() != want {
        return Err(EngineError::InvalidSpec(format!(
            "the memory file {} is {} bytes, but the snapshot's guest has {mem_mib} MiB ({want} bytes): \
             is it the memory file of this snapshot?",
            path.display(),
            meta.len()
        )));
    }
    std::fs::File::open(path).map_err(file_err("snapshot memory file", path))?;
    Ok(())
}

/// Checks the host files a restored machine needs: its run directory and its drives.
fn check_restore_files(spec: &VmSpec) -> Result<(), EngineError> {
    let meta =
        std::fs::metadata(&spec.run_dir).map_err(file_err("run directory", &spec.run_dir))?;
    if !meta.is_dir() {
        return Err(file_err("run directory", &spec.run_dir)(
            std::io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    for d in &spec.drives {
        let mut o = std::fs::OpenOptions::new();
        o.read(true).write(!d.read_only);
        o.open(&d.path)
            .map_err(file_err("drive image of the snapshot", &d.path))?;
    }
    crate::devices::check_device_files(spec)
}

impl QemuEngine {
    fn facts<'a>(&self, version: &'a str) -> EngineFacts<'a> {
        EngineFacts {
            accel: self.accel,
            arch: self.arch(),
            qemu_version: version,
        }
    }

    /// Saves the paused guest: memory file first, then the device state, each written
    /// beside its target, synced and renamed into place (and the directory synced), so
    /// neither path ever holds a partial file, even after a crash, and a state file
    /// never exists without its whole memory.
    pub(super) fn snapshot_impl(&self, target: &SnapshotTarget) -> Result<(), EngineError> {
        if target.diff {
            return Err(EngineError::Unsupported {
                engine: self.name.clone(),
                what: "Diff snapshots (QEMU keeps no dirty-page log that maps onto a \
                       Firecracker diff memory file): take a Full snapshot"
                    .into(),
            });
        }
        let vm = self.running()?;
        let version = self.version.to_string();
        let machine = Machine::describe(&vm.spec, self.facts(&version))?;
        let ram = match (&vm.spec.memory, &vm.ram) {
            (MemoryBacking::File { path, shared: true }, _) => path.clone(),
            // The engine's own descriptor of the memfd QEMU maps.
            (MemoryBacking::Shared | MemoryBacking::HugePages, Some(fd)) => {
                PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            }
            _ => {
                return Err(EngineError::Unsupported {
                    engine: self.name.clone(),
                    what: "snapshotting this guest: its RAM is not a shared memory file (a \
                           guest restored from a snapshot maps its RAM privately, and one \
                           started with anonymous memory has no file to save)"
                        .into(),
                })
            }
        };
        let mut guard = lock(&vm.qmp);
        let qmp = guard
            .as_mut()
            .ok_or_else(|| EngineError::InvalidState("the guest has been stopped".into()))?;
        ensure_paused(qmp)?;
        ec1_trace::event!("snapshot.create.start", vm = vm.spec.id.as_str());
        let how = copy_memory(&ram, &target.mem_path).map_err(|e| {
            EngineError::io(
                format!(
                    "writing the snapshot memory file {}",
                    target.mem_path.display()
                ),
                e,
            )
        })?;
        let tmp = temp_beside(&target.state_path);
        let written = (|| {
            let w = Writer::create(&tmp, &machine)
                .map_err(file_err("snapshot file", &target.state_path))?;
            save_state(qmp, &tmp, w.state_offset())?;
            // Sealed (digest) and synced, then named: the state file is the snapshot's
            // completion marker, written only once its memory file is durable.
            w.finish()
                .map_err(file_err("snapshot file", &target.state_path))?;
            ec1_engine::durable::rename_durably(&tmp, &target.state_path)
                .map_err(file_err("snapshot file", &target.state_path))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        ec1_trace::event!("snapshot.create.end", vm = vm.spec.id.as_str());
        log::debug!(
            "snapshot of {} written to {} (memory: {how:?})",
            vm.spec.id,
            target.state_path.display()
        );
        Ok(())
    }

    /// Starts a guest from a snapshot: checks the whole file before spawning anything.
    pub(super) fn restore_impl(
        &self,
        host: &VmSpec,
        source: &SnapshotSource,
        events: EventSink,
    ) -> Result<(), EngineError> {
        let mut slot = lock(&self.vm);
        if slot.is_some() {
            return Err(EngineError::InvalidState(
                "this engine has already started a guest; use a new engine for another".into(),
            ));
        }
        ec1_trace::event!("snapshot.restore.start", vm = host.id.as_str());
        let snap = SnapshotFile::open(&source.state_path)?;
        let version = self.version.to_string();
        snap.machine.check_engine(self.facts(&version))?;
        if snap.machine.qemu_version != version {
            log::warn!(
                "the snapshot {} was made by QEMU {}, this is QEMU {version}",
                source.state_path.display(),
                snap.machine.qemu_version
            );
        }
        check_mem_file(&source.mem_path, snap.machine.mem_mib)?;
        let mut spec = snap.machine.restore_spec(host, &source.mem_path);
        crate::snapshot::machine::override_nets(&mut spec, &source.net_overrides)?;
        if let Some(service) = &source.metadata {
            crate::snapshot::machine::reattach_metadata(&mut spec, &snap.machine, service);
        }
        check_spec(&spec)?;
        check_restore_files(&spec)?;
        if host.agent_socket.is_some() && !snap.machine.agent_channel {
            log::warn!(
                "the snapshot {} has no agent channel: commands cannot be run in this guest",
                source.state_path.display()
            );
        }
        let incoming = Incoming {
            path: snap.path.clone(),
            offset: snap.header.state_offset,
            resume: source.resume,
        };
        let qmp_path = spec.run_dir.join(QMP_SOCKET);
        let vm = self
            .launch(&spec, events, Some(&incoming))
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&qmp_path);
            })?;
        let exit = vm.exit.clone();
        *slot = Some(vm);
        drop(slot);
        exit.announce();
        ec1_trace::event!("snapshot.restore.end", vm = host.id.as_str());
        Ok(())
    }
}
