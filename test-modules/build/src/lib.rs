//! Builds the example and test modules for `wasm32-unknown-unknown`, once per process,
//! so that tests, examples and benchmarks can load them. A missing wasm32 target is
//! installed with rustup when rustup is there, and otherwise reported with the command
//! that installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The modules this builds, by package name.
pub const MODULES: [&str; 8] = [
    "tickdb-example-bank",
    "tickdb-example-chat",
    "tickdb-example-mmo",
    "tickdb-test-bench",
    "tickdb-test-features",
    "tickdb-test-hostile",
    "tickdb-test-evolve",
    "tickdb-test-evolve-v2",
];

const TARGET: &str = "wasm32-unknown-unknown";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the workspace exists")
}

/// Where the modules are built: a directory of its own, so that building them never
/// waits on (or invalidates) the build that runs the tests.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("wasm-modules"),
        None => workspace_root().join("target/wasm-modules"),
    }
}

/// The built `.wasm` of module package `package` (one of [`MODULES`]).
pub fn wasm_path(package: &str) -> PathBuf {
    assert!(MODULES.contains(&package), "unknown module package `{package}`");
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(build_all) {
        panic!("{e}");
    }
    target_dir().join(TARGET).join("release").join(format!("{}.wasm", package.replace('-', "_")))
}

/// The bytes of module package `package`.
pub fn wasm(package: &str) -> Vec<u8> {
    let path = wasm_path(package);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn build_all() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    check_target()?;
    let mut command = Command::new(&cargo);
    command.current_dir(workspace_root()).args(["build", "--release", "--locked", "--target", TARGET]);
    command.arg("--target-dir").arg(target_dir());
    // Modules ship without debug info: it would make them 20 times larger to compile.
    command.env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    for module in MODULES {
        command.args(["-p", module]);
    }
    let output = command.output().map_err(|e| format!("running {cargo}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the test modules for {TARGET} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// Checks that the wasm32 target is installed; if it is not and rustup is there,
/// installs it (once per machine), since modules cannot be built without it.
fn check_target() -> Result<(), String> {
    if target_installed()? {
        return Ok(());
    }
    eprintln!("tickdb: installing the {TARGET} target with rustup, to build modules (once per machine)");
    let installed = Command::new("rustup").args(["target", "add", TARGET]).status();
    if installed.is_ok_and(|status| status.success()) && target_installed()? {
        return Ok(());
    }
    Err(format!(
        "the {TARGET} target is not installed, so modules cannot be built; \
         install it with: rustup target add {TARGET}"
    ))
}

fn target_installed() -> Result<bool, String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("running {rustc}: {e}"))?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    Ok(sysroot.join("lib/rustlib").join(TARGET).exists())
}
