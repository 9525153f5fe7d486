//! Compiled-module artifacts on disk, so a restart deserialises (~0.05 ms)
//! instead of compiling (~16–40 ms per module).
//!
//! An artifact is named `<content sha256>-<engine compatibility key>.cwasm`:
//! a new wasmtime version or different engine flags never pick up an old
//! artifact. Artifacts are written to a temporary file and renamed, so a
//! reader never sees half a file. An artifact that fails to deserialise is
//! recompiled and overwritten; it never fails a load.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::engine::EngineShared;
use super::error::LoadError;
use super::module::ArtifactSource;

/// A short stable key for the engine's precompile compatibility hash.
pub(crate) fn compat_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// The compiled component for `bytes`: from the artifact directory when a
/// usable artifact is there, compiled (and stored) otherwise.
pub(crate) fn obtain(
    shared: &EngineShared,
    bytes: &[u8],
    content_hash: &str,
) -> Result<(Component, ArtifactSource), LoadError> {
    let Some(dir) = &shared.settings.artifact_dir else {
        return Ok((compile(shared, bytes)?, ArtifactSource::Compiled));
    };
    let path = artifact_path(dir, content_hash, &shared.compat_key);
    // Read, not mapped: a mapped artifact that anyone truncates or rewrites
    // in place would kill the process with SIGBUS on the next call. Reading
    // ~100 KB costs a fraction of a millisecond, on the load path only.
    match std::fs::read(&path) {
        Ok(artifact) => {
            // SAFETY: the artifact directory is the host's own (see
            // `EngineSettings::artifact_dir`) and only `store` below writes
            // it; wasmtime still checks the header, version and engine flags.
            match unsafe { Component::deserialize(&shared.engine, &artifact) } {
                Ok(component) => {
                    shared.artifacts_loaded.fetch_add(1, Ordering::Relaxed);
                    return Ok((component, ArtifactSource::Cached));
                }
                Err(err) => {
                    shared.artifacts_rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        artifact = %path.display(),
                        error = format!("{err:#}"),
                        "policy.artifact unusable; recompiling"
                    );
                }
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(artifact = %path.display(), error = %err, "policy.artifact unreadable; recompiling");
        }
    }
    let component = compile(shared, bytes)?;
    store(&component, &path);
    Ok((component, ArtifactSource::Compiled))
}

fn compile(shared: &EngineShared, bytes: &[u8]) -> Result<Component, LoadError> {
    let component =
        Component::new(&shared.engine, bytes).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
    shared.compiled.fetch_add(1, Ordering::Relaxed);
    Ok(component)
}

/// Best effort: a failure to store only costs a compile at the next start.
fn store(component: &Component, path: &Path) {
    let result = component
        .serialize()
        .map_err(|e| format!("{e:#}"))
        .and_then(|bytes| write_atomically(path, &bytes).map_err(|e| e.to_string()));
    if let Err(error) = result {
        tracing::warn!(artifact = %path.display(), %error, "policy.artifact not stored");
    }
}

fn artifact_path(dir: &Path, content_hash: &str, compat_key: &str) -> PathBuf {
    dir.join(format!("{content_hash}-{compat_key}.cwasm"))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // Unique per process and write, so two engines storing the same artifact
    // at once each rename a whole file of their own.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Feeds `Hash` output into SHA-256, so the key is stable across processes
/// (std's `DefaultHasher` makes no such promise).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("sha256 is 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compatibility_key_is_stable_for_one_configuration() {
        let engine = Engine::default();
        assert_eq!(compat_key(&engine), compat_key(&Engine::default()));
        assert_eq!(compat_key(&engine).len(), 16);
    }

    #[test]
    fn artifacts_are_written_whole_under_their_final_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = artifact_path(dir.path(), "abc", "def");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["abc-def.cwasm"]);
    }
}
