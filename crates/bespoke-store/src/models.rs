//! Model versions on disk: `<data_dir>/models/<version>/` holds a model's files (safetensors
//! tensors, id maps) and `meta.json`; `<data_dir>/models/ACTIVE` names the version serving uses.
//!
//! A version appears whole or not at all: its files are written and synced in a temporary
//! directory that is then renamed into place, and `ACTIVE` is replaced by rename as well. Version
//! numbers only grow; two writers racing for the same number retry with the next.
//!
//! Directories are created 0700 and files 0600 (see [`crate::owner_only`]): factors and key
//! lists are personal data.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Name of the metadata file inside a version directory.
const META: &str = "meta.json";
/// Name of the file naming the active version.
const ACTIVE: &str = "ACTIVE";

/// A stored model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRecord {
    /// Version number (1, 2, ...).
    pub version: u64,
    /// The metadata saved with it.
    pub meta: serde_json::Value,
    /// Whether serving uses it.
    pub active: bool,
    /// Total size of its files in bytes.
    pub bytes: u64,
    /// Names of its files (`meta.json` aside), sorted: what erasure must go through.
    pub files: Vec<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = crate::owner_only::create_options()
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(path: &Path) -> Result<()> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io(path))
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != META
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{name:?} is not a valid model file name"
        )))
    }
}

/// The model directory of a data directory.
#[derive(Debug, Clone)]
pub(crate) struct ModelDir {
    root: PathBuf,
}

impl ModelDir {
    pub(crate) fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("models"),
        }
    }

    fn versions(&self) -> Result<Vec<u64>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.root)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io(&self.root))?;
            if let Some(v) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
                && entry.path().join(META).exists()
            {
                out.push(v);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    pub(crate) fn save(&self, files: &[(&str, &[u8])], meta: &serde_json::Value) -> Result<u64> {
        for (name, _) in files {
            check_name(name)?;
        }
        crate::owner_only::create_dir_all(&self.root).map_err(io(&self.root))?;
        let tmp = self.root.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        crate::owner_only::create_dir(&tmp).map_err(io(&tmp))?;
        let written = (|| -> Result<()> {
            for (name, bytes) in files {
                write_synced(&tmp.join(name), bytes)?;
            }
            let meta = serde_json::to_vec_pretty(meta).expect("JSON values serialise");
            write_synced(&tmp.join(META), &meta)?;
            sync_dir(&tmp)
        })();
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let mut version = self.versions()?.last().copied().unwrap_or(0) + 1;
        loop {
            let target = self.root.join(version.to_string());
            // `rename` onto an existing non-empty directory fails, so a racing writer that took
            // this number first makes us move on to the next one.
            match fs::rename(&tmp, &target) {
                Ok(()) => break,
                Err(_) if target.exists() => version += 1,
                Err(e) => {
                    let _ = fs::remove_dir_all(&tmp);
                    return Err(io(&target)(e));
                }
            }
        }
        sync_dir(&self.root)?;
        Ok(version)
    }

    pub(crate) fn list(&self) -> Result<Vec<ModelRecord>> {
        let active = self.active()?;
        self.versions()?
            .into_iter()
            .map(|version| {
                let dir = self.root.join(version.to_string());
                let meta_path = dir.join(META);
                let text = fs::read(&meta_path).map_err(io(&meta_path))?;
                let meta = serde_json::from_slice(&text)
                    .map_err(|e| Error::Corrupt(format!("{}: {e}", meta_path.display())))?;
                let (mut bytes, mut files) = (0, Vec::new());
                for entry in fs::read_dir(&dir).map_err(io(&dir))? {
                    let entry = entry.map_err(io(&dir))?;
                    bytes += entry.metadata().map_err(io(&dir))?.len();
                    // Temporary files of an interrupted rewrite start with a dot.
                    match entry.file_name().into_string() {
                        Ok(name) if name != META && !name.starts_with('.') => files.push(name),
                        _ => {}
                    }
                }
                files.sort_unstable();
                Ok(ModelRecord {
                    version,
                    meta,
                    active: active == Some(version),
                    bytes,
                    files,
                })
            })
            .collect()
    }

    pub(crate) fn rewrite(&self, version: u64, name: &str, bytes: &[u8]) -> Result<()> {
        check_name(name)?;
        let dir = self.root.join(version.to_string());
        if !dir.join(META).exists() {
            return Err(Error::UnknownModel(version));
        }
        let tmp = dir.join(format!(".{name}.tmp"));
        write_synced(&tmp, bytes)?;
        let target = dir.join(name);
        fs::rename(&tmp, &target).map_err(io(&target))?;
        sync_dir(&dir)
    }

    pub(crate) fn read(&self, version: u64, name: &str) -> Result<Vec<u8>> {
        check_name(name)?;
        let dir = self.root.join(version.to_string());
        if !dir.join(META).exists() {
            return Err(Error::UnknownModel(version));
        }
        let path = dir.join(name);
        fs::read(&path).map_err(io(&path))
    }

    pub(crate) fn activate(&self, version: u64) -> Result<()> {
        if !self.root.join(version.to_string()).join(META).exists() {
            return Err(Error::UnknownModel(version));
        }
        let tmp = self
            .root
            .join(format!(".{ACTIVE}.tmp-{}", std::process::id()));
        write_synced(&tmp, version.to_string().as_bytes())?;
        let target = self.root.join(ACTIVE);
        fs::rename(&tmp, &target).map_err(io(&target))?;
        sync_dir(&self.root)
    }

    pub(crate) fn active(&self) -> Result<Option<u64>> {
        let path = self.root.join(ACTIVE);
        match fs::read_to_string(&path) {
            Ok(t) => {
                t.trim().parse().map(Some).map_err(|_| {
                    Error::Corrupt(format!("{} does not hold a version", path.display()))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Deletes every version older than the newest `keep`, except the active one.
    pub(crate) fn prune(&self, keep: usize) -> Result<Vec<u64>> {
        let active = self.active()?;
        let versions = self.versions()?;
        let cut = versions.len().saturating_sub(keep);
        let mut removed = Vec::new();
        for &v in &versions[..cut] {
            if Some(v) != active {
                self.delete(v)?;
                removed.push(v);
            }
        }
        Ok(removed)
    }

    /// Deletes a version that is not active. The directory is first renamed out of the
    /// version namespace, so a crash never leaves a half-deleted version that looks whole.
    pub(crate) fn delete(&self, version: u64) -> Result<()> {
        if self.active()? == Some(version) {
            return Err(Error::InvalidInput(format!(
                "model version {version} is active and cannot be deleted"
            )));
        }
        let dir = self.root.join(version.to_string());
        if !dir.join(META).exists() {
            return Err(Error::UnknownModel(version));
        }
        let doomed = self.root.join(format!(".deleting-{version}"));
        fs::rename(&dir, &doomed).map_err(io(&dir))?;
        sync_dir(&self.root)?;
        fs::remove_dir_all(&doomed).map_err(io(&doomed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_grow_and_activation_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let m = ModelDir::new(dir.path());
        assert_eq!(m.list().unwrap(), vec![]);
        assert_eq!(m.active().unwrap(), None);
        let v1 = m.save(&[("a.bin", b"one")], &json!({"n": 1})).unwrap();
        let v2 = m.save(&[("a.bin", b"two")], &json!({"n": 2})).unwrap();
        assert_eq!((v1, v2), (1, 2));
        assert_eq!(m.read(2, "a.bin").unwrap(), b"two");
        assert!(matches!(m.activate(9), Err(Error::UnknownModel(9))));
        m.activate(1).unwrap();
        let list = m.list().unwrap();
        assert_eq!(list.len(), 2);
        assert!(list[0].active && !list[1].active);
        assert_eq!(list[1].meta["n"], 2);
        assert_eq!(list[1].files, ["a.bin"]);
        assert!(m.save(&[("../x", b"")], &json!({})).is_err());
        assert!(m.save(&[("meta.json", b"")], &json!({})).is_err());
        // Pruning keeps the newest and the active version.
        let v3 = m.save(&[("a.bin", b"3")], &json!({})).unwrap();
        assert_eq!(m.prune(1).unwrap(), vec![2]);
        let left: Vec<u64> = m.list().unwrap().iter().map(|r| r.version).collect();
        assert_eq!(left, vec![1, v3]);
        // No temporary directory is left behind.
        let stray = fs::read_dir(dir.path().join("models"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .count();
        assert_eq!(stray, 0);
    }
}
