//! File-system helpers shared by every store and by the other service crates: atomic
//! replacement of a file, directory fsync, bounded reads, secret-file permissions, and the
//! file-system kind check behind `site doctor`.
//!
//! Why atomic replacement: a crash in the middle of rewriting a state file must leave either
//! the old or the new file, never a torn mix. `atomic_write` writes a temporary file in the
//! same directory, fsyncs it, renames it over the target (atomic on POSIX file systems) and
//! fsyncs the directory so the rename itself survives a power cut.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{Result, StoreError};

/// Writes `bytes` to `path` atomically with permission bits `mode` (e.g. `0o600`): a
/// temporary file in the same directory is written and fsynced, renamed over `path`, and the
/// directory is fsynced. After a crash `path` holds either its old content or `bytes`.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = write_temp(path, bytes, mode)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_of(path))
}

/// Writes and fsyncs a temporary sibling of `path`, returning its name; the caller renames it
/// and fsyncs the directory (once for many files, see the blob vault).
pub(crate) fn write_temp(path: &Path, bytes: &[u8], mode: u32) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|_| io::Error::other("randomness unavailable"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", hex::encode(suffix)));
    let tmp = parent_of(path).join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` is filtered by the umask at creation; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory, so that creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and parents) if needed with mode 0700 and checks that it is a directory
/// not accessible to group or others.
pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        sync_dir(parent_of(dir))?;
    }
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(StoreError::InvalidInput {
            what: "store directory",
            why: "exists and is not a directory",
        });
    }
    check_private(dir, &meta)
}

/// Refuses a file or directory whose mode grants anything to group or others.
pub(crate) fn check_private(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Reads at most `max` bytes of `path`; a longer file is [`StoreError::TooLarge`], an absent
/// one `Ok(None)`.
pub(crate) fn read_bounded(path: &Path, max: u64, what: &'static str) -> Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    if len > max {
        return Err(StoreError::TooLarge { what, len, max });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(StoreError::TooLarge {
            what,
            len: bytes.len() as u64,
            max,
        });
    }
    Ok(Some(bytes))
}

/// Reads a 32-byte secret key file, refusing one accessible to group or others, or of any
/// other length. `Ok(None)` when absent.
pub(crate) fn read_key_file(path: &Path) -> Result<Option<Zeroizing<[u8; 32]>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    check_private(path, &meta)?;
    if meta.len() != 32 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            what: "a key file must hold exactly 32 bytes",
        });
    }
    let mut key = Zeroizing::new([0u8; 32]);
    file.read_exact(key.as_mut())?;
    Ok(Some(key))
}

/// A fresh 32-byte key from the operating system's generator.
pub(crate) fn random_key() -> Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut()).map_err(|_| StoreError::Entropy)?;
    Ok(key)
}

/// Removes a file, treating "already absent" as done.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The kind of file system a path lives on, from `statfs`'s magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// A local file system (ext4, xfs, btrfs, zfs, tmpfs, overlay...).
    Local(&'static str),
    /// A network file system (NFS, SMB/CIFS, Ceph, 9p...): `flock` and fsync semantics there
    /// are not what the stores rely on.
    Network(&'static str),
    /// FUSE or an unrecognised magic number: could be either.
    Unknown(u32),
}

/// Which file system `path` is on (`statfs(2)`); what `site doctor` prints.
pub fn fs_kind(path: &Path) -> io::Result<FsKind> {
    let st = rustix::fs::statfs(path).map_err(io::Error::from)?;
    #[allow(clippy::unnecessary_cast)]
    let magic = (st.f_type as i64 as u64 & 0xffff_ffff) as u32;
    Ok(match magic {
        0xEF53 => FsKind::Local("ext2/3/4"),
        0x5846_5342 => FsKind::Local("xfs"),
        0x9123_683E => FsKind::Local("btrfs"),
        0x2FC1_2FC1 => FsKind::Local("zfs"),
        0x0102_1994 => FsKind::Local("tmpfs"),
        0x794C_7630 => FsKind::Local("overlayfs"),
        0xF2F5_2010 => FsKind::Local("f2fs"),
        0x6969 => FsKind::Network("nfs"),
        0x517B => FsKind::Network("smb"),
        0xFF53_4D42 => FsKind::Network("cifs"),
        0xFE53_4D42 => FsKind::Network("smb2"),
        0x00C3_6400 => FsKind::Network("ceph"),
        0x0102_1997 => FsKind::Network("9p"),
        0x6B41_4653 => FsKind::Network("afs"),
        0x0BD0_0BD0 => FsKind::Network("lustre"),
        0x4750_4653 => FsKind::Network("gpfs"),
        other => FsKind::Unknown(other),
    })
}

/// Refuses a directory on a recognised network file system with [`StoreError::NetworkFs`].
pub fn refuse_network_fs(dir: &Path) -> Result<()> {
    match fs_kind(dir)? {
        FsKind::Network(kind) => Err(StoreError::NetworkFs {
            path: dir.to_path_buf(),
            kind,
        }),
        _ => Ok(()),
    }
}
