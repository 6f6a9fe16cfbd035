//! Compiled-component cache. Cranelift takes seconds to compile the backend; the end-to-end
//! tests start the runner many times, so the native code is serialized once per distinct
//! `.wasm` (keyed by its SHA-256 and the engine's compatibility hash) and loaded directly on
//! later starts.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Where the cache lives when neither `--cache-dir` nor `SPIN_RUNNER_CACHE_DIR` says: in the
/// Cargo `target/` folder the component was built into (shared by every state directory, gone
/// with `cargo clean`), else in the state directory.
pub fn default_dir(wasm: &Path, state_dir: &Path) -> PathBuf {
    let target = wasm
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "target"));
    match target {
        Some(target) => target.join("spin-runner-cache"),
        None => state_dir.join("spin-runner-cache"),
    }
}

/// How a component was obtained, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled, then written to the cache.
    Compiled,
    /// Compiled; the cache could not be written (the reason was logged).
    CompiledUncached,
}

/// Compiles `wasm` (a binary or WAT component), or loads it from `cache_dir`.
pub fn load(engine: &Engine, wasm: &Path, cache_dir: &Path) -> Result<(Component, Outcome)> {
    let bytes =
        std::fs::read(wasm).with_context(|| format!("cannot read component {}", wasm.display()))?;
    let entry = cache_dir.join(entry_name(engine, &bytes));
    if entry.is_file() {
        // SAFETY: the file was written by `Component::serialize` of this very program (see
        // `store` below: written under a temporary name, then renamed into place), and
        // wasmtime checks its header, version and engine compatibility before using it.
        match unsafe { Component::deserialize_file(engine, &entry) } {
            Ok(component) => return Ok((component, Outcome::Hit)),
            Err(e) => eprintln!(
                "spin-runner: ignoring unusable cache entry {}: {e:#}",
                entry.display()
            ),
        }
    }
    let started = Instant::now();
    let component = Component::new(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile component {}", wasm.display()))?;
    eprintln!(
        "spin-runner: compiled {} in {:.1}s",
        wasm.display(),
        started.elapsed().as_secs_f64()
    );
    match store(&component, cache_dir, &entry) {
        Ok(()) => Ok((component, Outcome::Compiled)),
        Err(e) => {
            eprintln!("spin-runner: not caching the compiled component: {e:#}");
            Ok((component, Outcome::CompiledUncached))
        }
    }
}

fn entry_name(engine: &Engine, wasm: &[u8]) -> String {
    let digest = Sha256::digest(wasm);
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{:016x}.cwasm", engine_hash.finish())
}

fn store(component: &Component, dir: &Path, entry: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    // Concurrent starts may race to write the same entry: each writes its own temporary file
    // and the rename makes one of them the entry, never a half-written file.
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), unique()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, entry)
        .with_context(|| format!("cannot rename into {}", entry.display()))?;
    Ok(())
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dir_prefers_the_cargo_target_folder() {
        let state = Path::new("/tmp/state");
        assert_eq!(
            default_dir(Path::new("/w/target/wasm32-wasip2/release/b.wasm"), state),
            Path::new("/w/target/spin-runner-cache")
        );
        assert_eq!(
            default_dir(Path::new("/w/dist/b.wasm"), state),
            Path::new("/tmp/state/spin-runner-cache")
        );
    }

    #[test]
    fn a_second_load_hits_the_cache_and_a_changed_wasm_misses() {
        let engine = crate::server::engine().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("c.wat");
        std::fs::write(&wasm, "(component)").unwrap();
        let cache = dir.path().join("cache");
        assert_eq!(load(&engine, &wasm, &cache).unwrap().1, Outcome::Compiled);
        assert_eq!(load(&engine, &wasm, &cache).unwrap().1, Outcome::Hit);
        std::fs::write(&wasm, "(component (core module))").unwrap();
        assert_eq!(load(&engine, &wasm, &cache).unwrap().1, Outcome::Compiled);
        // A corrupt entry is ignored and replaced.
        for entry in std::fs::read_dir(&cache).unwrap() {
            std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
        }
        assert_eq!(load(&engine, &wasm, &cache).unwrap().1, Outcome::Compiled);
        assert_eq!(load(&engine, &wasm, &cache).unwrap().1, Outcome::Hit);
    }
}
