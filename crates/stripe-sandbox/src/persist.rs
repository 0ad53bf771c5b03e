//! State that survives a restart: with `Config::state_path` set, the world is loaded from
//! that file on start and written back after every request that changed it.
//!
//! A write is durable before it counts: the snapshot goes to a temporary file beside the
//! target, is fsynced, renamed over the target, and the directory is fsynced, so a crash
//! leaves either the old state or the new one, never half of each. Snapshots are taken
//! under the world's lock (so each is consistent) but written outside it; each carries the
//! world's change counter, and an older snapshot that loses the race to the disk is dropped
//! rather than written over a newer one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::world::World;

/// Writes snapshots of the world to one file.
pub struct Persister {
    path: PathBuf,
    /// The change counter of the newest snapshot written.
    written: Mutex<u64>,
}

impl Persister {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            written: Mutex::new(0),
        }
    }

    /// The world stored at the path, or `None` when there is no file yet.
    pub fn load(&self) -> io::Result<Option<World>> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let snapshot: Value = serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", self.path.display()),
            )
        })?;
        World::restore(&snapshot)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes `snapshot`, taken at change `version`, unless a newer one is already on disk.
    pub fn save(&self, version: u64, snapshot: &Value) -> io::Result<()> {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if version <= *written {
            return Ok(());
        }
        write_durably(&self.path, &serde_json::to_vec(snapshot)?)?;
        *written = version;
        Ok(())
    }
}

/// Temp file, fsync, rename, fsync of the directory.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sandbox-state".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // The rename is durable once the directory entry is.
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "stripe-sandbox-persist-{}-{name}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir.join("state.json")
    }

    #[test]
    fn a_saved_world_loads_back_with_its_objects_and_idempotent_answers() {
        let path = temp_path("roundtrip");
        let _ = fs::remove_file(&path);
        let persister = Persister::new(path.clone());
        assert!(persister.load().unwrap().is_none(), "no file yet");

        let mut world = World::default();
        world.insert(json!({ "id": "cus_1", "object": "customer" }));
        world.idempotency.insert(
            ("sk_test_x".into(), "key-1".into()),
            crate::world::StoredResponse {
                request_id: "req_1".into(),
                method: "POST".into(),
                path: "/v1/customers".into(),
                params: json!({}),
                status: 200,
                body: json!({ "id": "cus_1" }),
            },
        );
        persister.save(world.version(), &world.snapshot()).unwrap();

        let loaded = persister.load().unwrap().unwrap();
        assert_eq!(loaded.get("cus_1").unwrap()["object"], "customer");
        assert_eq!(loaded.all("customer").count(), 1);
        assert_eq!(
            loaded.idempotency[&("sk_test_x".to_owned(), "key-1".to_owned())].request_id,
            "req_1"
        );
    }

    #[test]
    fn an_older_snapshot_never_overwrites_a_newer_one() {
        let path = temp_path("order");
        let persister = Persister::new(path.clone());
        let mut world = World::default();
        world.insert(json!({ "id": "cus_old", "object": "customer" }));
        let old = (world.version(), world.snapshot());
        world.insert(json!({ "id": "cus_new", "object": "customer" }));
        persister.save(world.version(), &world.snapshot()).unwrap();
        persister.save(old.0, &old.1).unwrap();
        let loaded = persister.load().unwrap().unwrap();
        assert!(loaded.get("cus_new").is_some(), "the newer state stays");
    }
}
