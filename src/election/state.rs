//! The state file: the highest term a node has seen, kept across restarts so that a node never claims a
//! term twice. A node stores a term it minted before any message or reply that reveals it leaves, and a
//! term it learned behind them (see `synclab_core::election::Ready`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use synclab_core::election::{MAX_TERM, NodeId, Term};

/// Why the state file could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state file {path}: {reason}")]
pub struct StateError {
    pub path: PathBuf,
    pub reason: String,
}

/// A node's state file, `DIR/election-node-ID.json`: `{"id": ID, "term": TERM}`.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    id: NodeId,
}

impl StateFile {
    /// The state file of node `id` in `dir`.
    pub fn new(dir: &Path, id: NodeId) -> Self {
        Self { path: dir.join(format!("election-node-{id}.json")), id }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, reason: impl ToString) -> StateError {
        StateError { path: self.path.clone(), reason: reason.to_string() }
    }

    /// A file that cannot be trusted. Starting this node alone from term 0 could claim a term twice, so
    /// the way out is to start the whole group afresh.
    fn damaged(&self, reason: impl std::fmt::Display) -> StateError {
        self.error(format!(
            "{reason}; the file is damaged: stop every node of the group and remove all their state files \
             (with compose: `docker compose down --volumes`) to start the group afresh"
        ))
    }

    /// The saved term; 0 if there is no file yet. A file that does not parse stops the node: starting
    /// from 0 could claim a term again.
    pub fn load(&self) -> Result<Term, StateError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(self.error(e)),
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| self.damaged(format!("not JSON: {e}")))?;
        let id = value.get("id").and_then(|v| v.as_u64());
        if id != Some(self.id) {
            return Err(self.damaged(format!("it belongs to node {id:?}, not {}", self.id)));
        }
        let term = value.get("term").and_then(|v| v.as_u64()).ok_or_else(|| self.damaged("it has no term"))?;
        if term > MAX_TERM {
            return Err(self.damaged(format!("it holds term {term}, beyond the largest valid term {MAX_TERM}")));
        }
        Ok(term)
    }

    /// Saves `term` durably: a new file, synced, renamed over the old one, and the directory synced, so
    /// the term survives a killed process and a power cut alike. The folder (`--state-dir`) is created
    /// first if it does not exist yet. Blocking: call it off the async runtime.
    pub fn save(&self, term: Term) -> Result<(), StateError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| self.error(format!("cannot create its folder {} (--state-dir): {e}", dir.display())))?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::json!({ "id": self.id, "term": term }).to_string();
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| self.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("synclab-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_saved_term_loads_back_and_a_missing_file_is_term_zero() {
        let dir = dir("roundtrip");
        let file = StateFile::new(&dir, 3);
        assert_eq!(file.load(), Ok(0));
        file.save(17).unwrap();
        assert_eq!(file.load(), Ok(17));
        assert!(!file.path().with_extension("json.tmp").exists(), "the temporary file was renamed into place");
    }

    #[test]
    fn a_missing_folder_is_created_and_one_that_cannot_be_is_named() {
        let dir = dir("missing").join("nested").join("state");
        let file = StateFile::new(&dir, 3);
        assert_eq!(file.load(), Ok(0));
        file.save(5).unwrap();
        assert_eq!(file.load(), Ok(5));
        // A folder under a file cannot be created: the error names the flag and the folder.
        let blocker = super::tests::dir("blocker").join("a-file");
        std::fs::write(&blocker, "").unwrap();
        let err = StateFile::new(&blocker.join("state"), 3).save(1).unwrap_err().to_string();
        assert!(err.contains("--state-dir") && err.contains("a-file/state"), "{err}");
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused_with_its_path() {
        let dir = dir("damaged");
        let file = StateFile::new(&dir, 3);
        let cases = [
            ("{", "not JSON"),
            (r#"{"id":4,"term":1}"#, "belongs to node Some(4)"),
            (r#"{"id":3}"#, "has no term"),
            (r#"{"id":3,"term":18446744073709551615}"#, "beyond the largest valid term"),
            (r#"{"id":3,"term":-1}"#, "has no term"),
        ];
        for (text, why) in cases {
            std::fs::write(file.path(), text).unwrap();
            let err = file.load().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("election-node-3.json") && err.contains("down --volumes"), "{err}");
        }
    }
}
