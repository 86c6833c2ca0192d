//! Bounded reads, atomic writes and the advisory lock that serialises high-water updates.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::ManifestError;

/// Reads at most `max` bytes; a larger file is refused, not truncated.
pub fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, ManifestError> {
    let file = File::open(path).map_err(|e| ManifestError::io(path, e))?;
    read_file_bounded(file, path, max)
}

/// Like [`read_bounded`], but `Ok(None)` when nothing at all is at `path`. Only "not found"
/// means absent: a permission error, a path through a non-directory, or a symbolic link whose
/// target is missing is an error, never "no file" (which a caller might treat as first use).
pub fn read_bounded_if_present(path: &Path, max: usize) -> Result<Option<Vec<u8>>, ManifestError> {
    match File::open(path) {
        Ok(file) => read_file_bounded(file, path, max).map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => match fs::symlink_metadata(path) {
            // Nothing there, not even a link: absent.
            Err(e2) if e2.kind() == ErrorKind::NotFound => Ok(None),
            Err(e2) => Err(ManifestError::io(path, e2)),
            Ok(_) => Err(ManifestError::io(
                path,
                std::io::Error::new(
                    ErrorKind::NotFound,
                    "a symbolic link to a missing file (refused: not treated as absent)",
                ),
            )),
        },
        Err(e) => Err(ManifestError::io(path, e)),
    }
}

fn read_file_bounded(file: File, path: &Path, max: usize) -> Result<Vec<u8>, ManifestError> {
    let mut buf = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| ManifestError::io(path, e))?;
    if buf.len() > max {
        return Err(ManifestError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(buf)
}

fn split(path: &Path) -> Result<(PathBuf, std::ffi::OsString), ManifestError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| ManifestError::invalid(format!("{} has no file name", path.display())))?;
    Ok((dir, name.to_os_string()))
}

/// An exclusive advisory lock on `.NAME.lock` next to `path`, held until dropped. The lock
/// file itself is never renamed or removed, so every writer locks the same inode.
pub fn lock_sibling(path: &Path) -> Result<File, ManifestError> {
    let (dir, name) = split(path)?;
    let mut lock_name = std::ffi::OsString::from(".");
    lock_name.push(&name);
    lock_name.push(".lock");
    let lock_path = dir.join(lock_name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| ManifestError::io(&lock_path, e))?;
    file.lock().map_err(|e| ManifestError::io(&lock_path, e))?;
    Ok(file)
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new content: a temp
/// file in the same directory, fsync, rename over `path`, fsync the directory.
///
/// The temp file has a fresh random name (`.NAME.<16 hex>.tmp`) and is created with
/// `create_new` (`O_CREAT|O_EXCL`): an existing file or symbolic link at that name is never
/// opened, so a planted link cannot redirect the write, and two writers never share (and
/// rename) each other's partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ManifestError> {
    let (dir, name) = split(path)?;
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|_| {
        ManifestError::io(
            path,
            std::io::Error::other("the operating system's random number generator failed"),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(&name);
    tmp_name.push(format!(".{}.tmp", hex::encode(nonce)));
    let tmp = dir.join(tmp_name);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| ManifestError::io(&tmp, e))?;
    // From here on the temp file is ours: remove it on any failure.
    let result = (|| {
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    drop(f);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| ManifestError::io(path, e))
}
