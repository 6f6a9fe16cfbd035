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
            Ok(component) => {
                touch(&entry);
                return Ok((component, Outcome::Hit));
            }
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
        Ok(()) => {
            prune(cache_dir, KEEP);
            Ok((component, Outcome::Compiled))
        }
        Err(e) => {
            eprintln!("spin-runner: not caching the compiled component: {e:#}");
            Ok((component, Outcome::CompiledUncached))
        }
    }
}

/// How many compiled components the cache keeps (the most recently used ones): each backend
/// rebuild adds an entry of about 2 MB.
const KEEP: usize = 8;

/// Marks an entry as recently used (its modification time orders [`prune`]).
fn touch(entry: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(entry) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Deletes all but the `keep` most recently used entries. Best effort: a concurrent start
/// that loses its entry here just compiles again.
fn prune(dir: &Path, keep: usize) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = read
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "cwasm"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    entries.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, old) in entries.into_iter().skip(keep) {
        let _ = std::fs::remove_file(old);
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

    #[test]
    fn pruning_keeps_the_most_recently_used_entries() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::time::SystemTime::now();
        for i in 0..5u64 {
            let path = dir.path().join(format!("{i}.cwasm"));
            std::fs::write(&path, b"x").unwrap();
            let file = std::fs::File::options().append(true).open(&path).unwrap();
            file.set_modified(base - std::time::Duration::from_secs(100 - i))
                .unwrap();
        }
        std::fs::write(dir.path().join("unrelated.txt"), b"x").unwrap();
        touch(&dir.path().join("0.cwasm"));
        prune(dir.path(), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec!["0.cwasm", "3.cwasm", "4.cwasm", "unrelated.txt"]);
    }
}
