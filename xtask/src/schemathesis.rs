//! Schemathesis, the property-based API tester that checks the published `openapi.yaml`
//! against the real gateway (`tests/e2e/gateway_schemathesis.rs`), from PyPI into `.venv`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::{paths, venv};

/// The Schemathesis release the contract is tested with.
pub const VERSION: &str = "4.32.5";

/// The `schemathesis` command inside the project's virtual environment, installing it when it
/// is missing or of another version.
pub fn ensure_installed() -> Result<PathBuf> {
    venv::ensure(
        &format!("schemathesis=={VERSION}"),
        VERSION,
        || Some(paths::venv().join("bin/schemathesis")).filter(|p| p.exists()),
        version_of,
    )
}

/// `schemathesis --version` prints `schemathesis, version 4.32.5`.
fn version_of(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .rsplit(' ')
        .next()
        .map(str::to_owned)
}
