//! The pinned toolchain's WebAssembly targets.
//!
//! rustup installs the `targets` of `rust-toolchain.toml` only when it installs the toolchain
//! itself; a machine that already had the pinned version (many images ship it) lacks them and
//! every wasm build stops with "can't find crate for `core`". So every command that builds
//! WebAssembly first makes sure the targets are there: one `rustup target list`, and a
//! `rustup target add` only for what is missing.
//!
//! The filter's RSA verification (`ring`) has a C part, which the wasm targets build with
//! clang: Debian's `clang` is installed with the targets when it is missing.

use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::{debian, paths};

/// Installs the wasm targets `rust-toolchain.toml` lists that the pinned toolchain lacks,
/// and clang for the C code some crates compile for them, once per process. Quick when
/// they are present.
pub fn ensure_targets() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        debian::ensure("clang", "clang")
            .and_then(|_| ensure_targets_now())
            .map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn ensure_targets_now() -> Result<()> {
    let file = paths::root().join("rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let wanted = pinned_targets(&text)
        .with_context(|| format!("{}: no `toolchain.targets` list", file.display()))?;
    // rustup honours rust-toolchain.toml from the current folder, so the list and the
    // add below apply to the pinned toolchain, not the machine's default.
    let listed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(paths::root())
        .output();
    let listed = match listed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => bail!(
            "`rustup target list --installed` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => bail!(
            "rustup is needed to install the wasm targets ({}) and was not found ({e}); \
             install it from your package manager or rustup.rs",
            wanted.join(", ")
        ),
    };
    let installed: Vec<&str> = listed.lines().map(str::trim).collect();
    let missing: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|t| !installed.contains(t))
        .collect();
    if missing.is_empty() {
        eprintln!("xtask: wasm targets present: {}", wanted.join(" "));
        return Ok(());
    }
    eprintln!(
        "xtask: installing the pinned toolchain's wasm targets: {}",
        missing.join(" ")
    );
    let status = Command::new("rustup")
        .args(["target", "add"])
        .args(&missing)
        .current_dir(paths::root())
        .status()
        .context("running rustup target add")?;
    if !status.success() {
        bail!(
            "`rustup target add {}` failed ({status})",
            missing.join(" ")
        );
    }
    Ok(())
}

/// The `toolchain.targets` of a `rust-toolchain.toml`.
fn pinned_targets(text: &str) -> Option<Vec<String>> {
    let doc: toml::Table = text.parse().ok()?;
    let targets = doc.get("toolchain")?.get("targets")?.as_array()?;
    targets
        .iter()
        .map(|t| t.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::pinned_targets;

    #[test]
    fn reads_the_pinned_targets() {
        let toml =
            "[toolchain]\nchannel = \"1.95.0\"\ntargets = [\"wasm32-wasip1\", \"wasm32-wasip2\"]\n";
        assert_eq!(
            pinned_targets(toml),
            Some(vec!["wasm32-wasip1".to_owned(), "wasm32-wasip2".to_owned()])
        );
        assert_eq!(pinned_targets("[toolchain]\nchannel = \"1\"\n"), None);
    }

    #[test]
    fn the_repository_pins_every_wasm_target_it_builds() {
        let text = std::fs::read_to_string(crate::paths::root().join("rust-toolchain.toml"))
            .unwrap_or_default();
        let targets = pinned_targets(&text).unwrap_or_default();
        for t in ["wasm32-wasip1", "wasm32-wasip2", "wasm32-unknown-unknown"] {
            assert!(
                targets.iter().any(|x| x == t),
                "{t} missing from rust-toolchain.toml"
            );
        }
    }
}
