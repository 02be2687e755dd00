//! Media change on a running guest (Firecracker's `PATCH /drives` with a new
//! `path_on_host`).
//!
//! A `virtio-blk` device has no tray, so QEMU's `blockdev-change-medium` refuses it
//! ("not removable"). Instead the drive's raw format node is re-pointed at a new file
//! node: `blockdev-add` the new file, `blockdev-reopen` the format node with
//! `file` = the new node, then drop the old file node. The guest's device stays, and its
//! next reads come from the new file.
//!
//! Linux reads a virtio-blk capacity only when told the configuration changed. For a
//! read-write drive of a new size the engine triggers that with a same-size
//! `block_resize` (no data changes); QEMU refuses that on a read-only drive, whose guest
//! then keeps the old capacity until it reboots.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use ec1_engine::{CacheType, EngineError};
use qapi::qmp::{
    block_resize, blockdev_add, blockdev_del, blockdev_reopen, BlockdevCacheOptions,
    BlockdevOptions, BlockdevOptionsBase, BlockdevOptionsFile, BlockdevOptionsGenericFormat,
    BlockdevOptionsRaw, BlockdevRef, OnOffAuto,
};

use crate::args::DriveNames;
use crate::qmp::QmpClient;

/// What the engine remembers about each drive of a running guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DriveState {
    pub id: String,
    pub names: DriveNames,
    pub read_only: bool,
    pub cache: CacheType,
    /// Served by a vhost-user backend: no medium to change, no throttle.
    pub vhost_user: bool,
    /// The generation of the current file node (0 is the one from the command line).
    pub generation: u64,
    /// The current file's size in bytes.
    pub size: u64,
}

fn cache_options(cache: CacheType) -> BlockdevCacheOptions {
    BlockdevCacheOptions {
        direct: Some(false),
        no_flush: Some(cache == CacheType::Unsafe),
    }
}

fn base(node: &str, read_only: bool, cache: CacheType) -> BlockdevOptionsBase {
    BlockdevOptionsBase {
        node_name: Some(node.to_string()),
        read_only: Some(read_only),
        cache: Some(cache_options(cache)),
        auto_read_only: None,
        detect_zeroes: None,
        discard: None,
        force_share: None,
    }
}

/// The new file node, with the same settings the command line gave the first one.
pub(crate) fn file_node(
    node: &str,
    path: &Path,
    read_only: bool,
    cache: CacheType,
) -> Result<BlockdevOptions, EngineError> {
    let filename = path.to_str().ok_or_else(|| {
        EngineError::InvalidSpec(format!(
            "drive path {} is not UTF-8, which QMP cannot carry",
            path.display()
        ))
    })?;
    Ok(BlockdevOptions::file {
        base: base(node, read_only, cache),
        file: BlockdevOptionsFile {
            filename: filename.to_string(),
            locking: Some(if crate::image_lock::locks(read_only) {
                OnOffAuto::on
            } else {
                OnOffAuto::off
            }),
            aio: None,
            aio_max_batch: None,
            drop_cache: None,
            pr_manager: None,
            x_check_cache_dropped: None,
        },
    })
}

/// The drive's format node as it should be after the change. `blockdev-reopen` resets
/// every option it is not given, so this repeats all of them.
pub(crate) fn format_node(d: &DriveState, file_node: &str) -> BlockdevOptions {
    BlockdevOptions::raw {
        base: base(&d.names.format_node, d.read_only, d.cache),
        raw: BlockdevOptionsRaw {
            base: BlockdevOptionsGenericFormat {
                file: BlockdevRef::reference(file_node.to_string()),
            },
            offset: None,
            size: None,
        },
    }
}

/// Opens the new medium the way QEMU will, so that a typo fails with a clear message.
pub(crate) fn check_medium(path: &Path, read_only: bool) -> Result<u64, EngineError> {
    let file_err = |source| EngineError::File {
        what: if read_only {
            "drive image"
        } else {
            "drive image (read-write)"
        },
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(file_err)?;
    let meta = f.metadata().map_err(file_err)?;
    if meta.is_dir() {
        return Err(file_err(std::io::Error::from_raw_os_error(libc::EISDIR)));
    }
    Ok(meta.size())
}

/// Swaps the medium of drive `d` for `path`; updates `d` on success.
pub(crate) fn change_medium(
    qmp: &mut QmpClient,
    d: &mut DriveState,
    path: &Path,
) -> Result<(), EngineError> {
    let size = check_medium(path, d.read_only)?;
    let new_node = d.names.file_node(d.generation + 1);
    qmp.execute(&blockdev_add(file_node(
        &new_node,
        path,
        d.read_only,
        d.cache,
    )?))?;
    if let Err(e) = qmp.execute(&blockdev_reopen {
        options: vec![format_node(d, &new_node)],
    }) {
        let _ = qmp.execute(&blockdev_del {
            node_name: new_node,
        });
        return Err(e.into());
    }
    if d.generation > 0 {
        // Nodes added over QMP stay until deleted; the command line's first node went
        // away by itself when the format node let go of it.
        if let Err(e) = qmp.execute(&blockdev_del {
            node_name: d.names.file_node(d.generation),
        }) {
            log::warn!("could not release the old medium of drive {}: {e}", d.id);
        }
    }
    d.generation += 1;
    let old_size = std::mem::replace(&mut d.size, size);
    if size != old_size {
        if d.read_only {
            log::warn!(
                "drive {}: the new medium has {size} bytes, the old one {old_size}; the guest keeps the old size for a read-only drive",
                d.id
            );
        } else {
            // A same-size resize makes virtio-blk tell the guest its new capacity.
            qmp.execute(&block_resize {
                node_name: Some(d.names.format_node.clone()),
                device: None,
                size: size as i64,
            })
            .map_err(|e| {
                EngineError::Control(format!(
                    "drive {}: the medium was changed, but the guest could not be told its new size: {e}",
                    d.id
                ))
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive() -> DriveState {
        DriveState {
            vhost_user: false,
            id: "rootfs".into(),
            names: DriveNames::new(0),
            read_only: true,
            cache: CacheType::Unsafe,
            generation: 0,
            size: 0,
        }
    }

    #[test]
    fn reopen_options_repeat_every_setting() {
        let v = serde_json::to_value(blockdev_reopen {
            options: vec![format_node(&drive(), "drive0-file1")],
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"options": [{
                "driver": "raw",
                "node-name": "drive0-fmt",
                "read-only": true,
                "cache": {"direct": false, "no-flush": true},
                "file": "drive0-file1",
            }]})
        );
    }

    #[test]
    fn new_file_nodes_match_the_command_line() {
        let mut d = drive();
        d.cache = CacheType::Writeback;
        let v = serde_json::to_value(blockdev_add(
            file_node("drive0-file1", Path::new("/img/b.img"), false, d.cache).unwrap(),
        ))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "driver": "file",
                "node-name": "drive0-file1",
                "read-only": false,
                "cache": {"direct": false, "no-flush": false},
                "filename": "/img/b.img",
                "locking": "on",
            })
        );
    }

    #[test]
    fn non_utf8_paths_are_rejected() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/img/\xff"));
        assert!(matches!(
            file_node("n", p, true, CacheType::Unsafe),
            Err(EngineError::InvalidSpec(_))
        ));
    }

    #[test]
    fn media_are_checked_before_qemu_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.img");
        assert!(matches!(
            check_medium(&p, true),
            Err(EngineError::File {
                what: "drive image",
                ..
            })
        ));
        std::fs::write(&p, [0u8; 1024]).unwrap();
        assert_eq!(check_medium(&p, false).unwrap(), 1024);
        let e = check_medium(dir.path(), true).unwrap_err();
        assert!(e.to_string().contains("Is a directory"), "{e}");
    }
}
