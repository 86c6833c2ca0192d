//! atomic_write, fs_kind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use amalgam_store::{FsKind, atomic_write, fs_kind, refuse_network_fs};

#[test]
fn atomic_write_replaces_content_with_exact_mode_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.bin");
    atomic_write(&path, b"first", 0o600).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"first");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    atomic_write(&path, b"second, longer", 0o640).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("state.bin")]);
}

#[test]
fn atomic_write_into_missing_directory_fails_without_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    assert!(atomic_write(&dir.path().join("no/such/file"), b"x", 0o600).is_err());
    assert!(!dir.path().join("no").exists());
}

#[test]
fn fs_kind_recognises_the_temp_directory_as_local() {
    let dir = tempfile::tempdir().unwrap();
    let kind = fs_kind(dir.path()).unwrap();
    assert!(!matches!(kind, FsKind::Network(_)), "{kind:?}");
    refuse_network_fs(dir.path()).unwrap();
    assert!(fs_kind(&dir.path().join("absent")).is_err());
}
