//! Module projects: `tickdb init` (a new project from the template) and `tickdb build`
//! (the project compiled to WebAssembly with cargo).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tickdb_wasm_abi::ModuleDef;

use crate::{CliError, spinner};

const TARGET: &str = "wasm32-unknown-unknown";

/// The Rust module template: `Cargo.toml` (with the SDK's path filled in) and `src/lib.rs`.
const TEMPLATE_MANIFEST: &str = include_str!("../templates/rust/Cargo.toml.in");
const TEMPLATE_LIB: &str = include_str!("../templates/rust/src/lib.rs");

/// The module SDK in the checkout this CLI was built from: tickdb's crates are not on
/// crates.io yet, so new projects depend on it by path.
pub fn sdk_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk-rust/module")
}

/// Writes a new module project into `dir` (which must not exist or be empty).
pub fn init(dir: &Path, sdk: &Path) -> Result<(), CliError> {
    let io = |e: std::io::Error| CliError::new(format!("{}: {e}", dir.display()));
    if dir.exists() && std::fs::read_dir(dir).map_err(io)?.next().is_some() {
        return Err(CliError::new(format!(
            "{} exists and is not empty; choose a new directory",
            dir.display()
        )));
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_', "-"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "tickdb-module".into());
    let sdk =
        sdk.canonicalize().map_err(|e| CliError::new(format!("the tickdb SDK at {}: {e}", sdk.display())))?;
    let manifest =
        TEMPLATE_MANIFEST.replace("{{name}}", &name).replace("{{sdk_path}}", &sdk.display().to_string());
    std::fs::create_dir_all(dir.join("src")).map_err(io)?;
    std::fs::write(dir.join("Cargo.toml"), manifest).map_err(io)?;
    std::fs::write(dir.join("src/lib.rs"), TEMPLATE_LIB).map_err(io)?;
    std::fs::write(dir.join(".gitignore"), "/target\n").map_err(io)?;
    Ok(())
}

/// Builds the module project at `dir` for wasm32 and returns the `.wasm` file.
pub fn build(dir: &Path) -> Result<PathBuf, CliError> {
    let manifest = dir.join("Cargo.toml");
    let manifest = manifest.canonicalize().map_err(|e| {
        CliError::new(format!("no module project at {}: {} ({e})", dir.display(), manifest.display()))
    })?;
    ensure_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let progress = spinner(format!("building {} for {TARGET}", dir.display()));
    let output = Command::new(&cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", TARGET, "--message-format=json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest)
        // Modules ship without debug info: it makes them many times larger to compile.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CliError::new(format!("running {cargo}: {e}")))?;
    progress.finish_and_clear();
    if !output.status.success() {
        return Err(CliError::new(format!(
            "building the module failed:\n{}",
            String::from_utf8_lossy(&output.stderr).trim_end()
        )));
    }
    wasm_artifact(&output.stdout, &manifest).ok_or_else(|| {
        CliError::new(format!(
            "cargo built no wasm for {}: is the package a `cdylib` (`[lib] crate-type = [\"cdylib\"]`)?",
            manifest.display()
        ))
    })
}

/// The `.wasm` cargo reported building for the package of `manifest`.
fn wasm_artifact(messages: &[u8], manifest: &Path) -> Option<PathBuf> {
    let mut found = None;
    for line in messages.split(|&b| b == b'\n') {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" || message["manifest_path"].as_str() != manifest.to_str()
        {
            continue;
        }
        let wasm = message["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".wasm"));
        if let Some(wasm) = wasm {
            found = Some(PathBuf::from(wasm));
        }
    }
    found
}

/// Checks that the wasm32 target is installed, installing it with rustup if it is not.
fn ensure_target() -> Result<(), CliError> {
    if target_installed()? {
        return Ok(());
    }
    eprintln!("tickdb: installing the {TARGET} target with rustup (once per machine)");
    let installed = Command::new("rustup").args(["target", "add", TARGET]).status();
    if installed.is_ok_and(|status| status.success()) && target_installed()? {
        return Ok(());
    }
    Err(CliError::new(format!(
        "the {TARGET} target is not installed, so modules cannot be built; install it with:\n  rustup target add {TARGET}"
    )))
}

fn target_installed() -> Result<bool, CliError> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| CliError::new(format!("running {rustc}: {e}")))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    Ok(sysroot.join("lib/rustlib").join(TARGET).exists())
}

/// The module definition a `.wasm` declares, read by loading it as the server would.
pub fn module_def(wasm: &[u8]) -> Result<ModuleDef, CliError> {
    let host = tickdb_engine::host::ModuleHost::new(tickdb_engine::host::HostConfig::default())
        .map_err(|e| CliError::new(format!("starting the module host: {e}")))?;
    let module = host.load(wasm).map_err(|e| CliError::new(format!("the module does not load: {e}")))?;
    Ok(module.def.clone())
}
