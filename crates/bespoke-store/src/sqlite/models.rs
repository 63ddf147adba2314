//! [`crate::ModelStore`] on SQLite: model files live in the data directory beside the
//! database ([`crate::models`]), not in it, so this delegates.

use super::*;

impl crate::ModelStore for SqliteStore {
    fn save_model(&self, files: &[(&str, &[u8])], meta: &serde_json::Value) -> Result<u64> {
        self.models.save(files, meta)
    }

    fn list_models(&self) -> Result<Vec<crate::ModelRecord>> {
        self.models.list()
    }

    fn read_model_file(&self, version: u64, name: &str) -> Result<Vec<u8>> {
        self.models.read(version, name)
    }

    fn activate_model(&self, version: u64) -> Result<()> {
        self.models.activate(version)
    }

    fn active_model(&self) -> Result<Option<u64>> {
        self.models.active()
    }

    fn prune_models(&self, keep: usize) -> Result<Vec<u64>> {
        self.models.prune(keep)
    }

    fn delete_model(&self, version: u64) -> Result<()> {
        self.models.delete(version)
    }

    fn rewrite_model_file(&self, version: u64, name: &str, bytes: &[u8]) -> Result<()> {
        self.models.rewrite(version, name, bytes)
    }
}
