//! Files at rest readable by their owner only: the data directory and everything the store
//! creates in it (directories 0700, files 0600), whatever the process umask, and a list of
//! existing paths that are wider, which the store warns about when it opens.
//!
//! SQLite creates the `-wal` and `-shm` files with the database file's mode, so creating the
//! database file 0600 covers them too.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Mode of directories the store creates.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of files the store creates.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents; the ones created are owner-only.
pub(crate) fn create_dir_all(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(path)
}

/// Creates the directory `path` (its parent must exist), owner-only.
pub(crate) fn create_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(path)
}

/// Options that create (or truncate) a file for writing; a file they create is owner-only.
pub(crate) fn create_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options
}

/// Creates `path` as an empty owner-only file unless it exists (so that SQLite, which would
/// create it with the umask's mode, opens ours).
pub(crate) fn touch(path: &Path) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The permission bits of `path` if group or others have any access to it.
#[cfg(unix)]
fn wider_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::symlink_metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn wider_mode(_: &Path) -> Option<u32> {
    None
}

/// Paths of the data directory `dir` (itself, the database and its WAL and shared-memory files,
/// the model directory and everything in it) that group or others may access, with their
/// permission bits. Other files in `dir` are the operator's and are not looked at.
pub(crate) fn wider_than_owner(dir: &Path, db_file: &str) -> Vec<(PathBuf, u32)> {
    let mut paths = vec![dir.to_owned()];
    for suffix in ["", "-wal", "-shm"] {
        paths.push(dir.join(format!("{db_file}{suffix}")));
    }
    let mut stack = vec![dir.join("models")];
    while let Some(p) = stack.pop() {
        if let Ok(entries) = fs::read_dir(&p) {
            stack.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
        }
        paths.push(p);
    }
    paths
        .into_iter()
        .filter_map(|p| wider_mode(&p).map(|m| (p, m)))
        .collect()
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_paths_are_owner_only_and_wider_ones_are_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir_all(&dir).unwrap();
        touch(&dir.join("x.db")).unwrap();
        create_dir(&dir.join("models")).unwrap();
        create_options().open(dir.join("models").join("f")).unwrap();
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("x.db")), 0o600);
        assert_eq!(mode(&dir.join("models/f")), 0o600);
        assert_eq!(wider_than_owner(&dir, "x.db"), vec![]);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(dir.join("models/f"), fs::Permissions::from_mode(0o644)).unwrap();
        let mut wide = wider_than_owner(&dir, "x.db");
        wide.sort();
        assert_eq!(
            wide,
            vec![(dir.clone(), 0o755), (dir.join("models/f"), 0o644)]
        );
    }
}
