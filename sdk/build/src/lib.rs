//! Builds FluxPay policy crates into sandbox-ready Wasm components.
//!
//! A policy is an ordinary Rust crate that depends on `fluxpay-policy-sdk`.
//! [`build_component`] compiles it for `wasm32-unknown-unknown` (so the
//! module imports nothing from WASI: the pure sandbox) and wraps the core
//! module into a component with `wit-component`, reading the WIT world the
//! SDK's bindings embedded in it.
//!
//! The host's build script uses it for the reference policies and the test
//! harness for the guest fixtures; policy authors can call it from their own
//! `build.rs` or test code.
//!
//! Cargo is run as a child process with its own target directory, so calling
//! this from a build script or a test of the same workspace does not deadlock
//! on the outer build's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The target a policy is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `wasm32-unknown-unknown`: no WASI imports; the module is turned into a
    /// component here. This is how every real policy is built.
    UnknownUnknown,
    /// `wasm32-wasip2`: rustc emits a component that imports WASI. The host
    /// refuses such modules; this target exists so tests can prove it.
    Wasip2,
}

impl Target {
    /// The rustc target triple.
    pub fn triple(self) -> &'static str {
        match self {
            Target::UnknownUnknown => "wasm32-unknown-unknown",
            Target::Wasip2 => "wasm32-wasip2",
        }
    }
}

/// What to build and where.
#[derive(Debug, Clone)]
pub struct Build {
    /// The Cargo package name of the policy crate.
    pub package: String,
    /// The workspace (or crate) manifest to build from.
    pub manifest_path: PathBuf,
    /// The wasm target.
    pub target: Target,
    /// Cargo's target directory for the wasm build; kept apart from the
    /// native one so nested builds never wait on the outer build's lock.
    pub target_dir: PathBuf,
    /// Where the finished components are written, as `<out_dir>/<name>.wasm`.
    pub out_dir: PathBuf,
    /// Extra cargo features to enable.
    pub features: Vec<String>,
}

impl Build {
    /// A release build of `package` from the workspace at `workspace_root`,
    /// into `<workspace_root>/target/wasm` with components in
    /// `<workspace_root>/target/policies`.
    pub fn in_workspace(workspace_root: &Path, package: &str) -> Self {
        let target = workspace_root.join("target");
        Build {
            package: package.to_owned(),
            manifest_path: workspace_root.join("Cargo.toml"),
            target: Target::UnknownUnknown,
            target_dir: target.join("wasm"),
            out_dir: target.join("policies"),
            features: Vec::new(),
        }
    }

    /// Same build for another target.
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// Same build with another output directory.
    pub fn out_dir(mut self, out_dir: impl Into<PathBuf>) -> Self {
        self.out_dir = out_dir.into();
        self
    }

    /// The file the component is written to.
    pub fn output_path(&self) -> PathBuf {
        let suffix = match self.target {
            Target::UnknownUnknown => "",
            Target::Wasip2 => ".wasip2",
        };
        self.out_dir.join(format!("{}{suffix}.wasm", self.package))
    }

    /// Compile the crate and write the component; returns its path.
    pub fn run(&self) -> Result<PathBuf> {
        ensure_target_installed(self.target)?;
        let core = self.cargo_build()?;
        let bytes = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
        let component = match self.target {
            Target::UnknownUnknown => componentize(&bytes)
                .with_context(|| format!("turning {} into a component", core.display()))?,
            // rustc already emits a component for wasip2.
            Target::Wasip2 => bytes,
        };
        std::fs::create_dir_all(&self.out_dir)
            .with_context(|| format!("creating {}", self.out_dir.display()))?;
        let out = self.output_path();
        write_if_changed(&out, &component)?;
        Ok(out)
    }

    fn cargo_build(&self) -> Result<PathBuf> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--release")
            .arg("--quiet")
            .arg("--manifest-path")
            .arg(&self.manifest_path)
            .arg("-p")
            .arg(&self.package)
            .arg("--lib")
            .arg("--target")
            .arg(self.target.triple())
            .arg("--target-dir")
            .arg(&self.target_dir);
        if !self.features.is_empty() {
            cmd.arg("--features").arg(self.features.join(","));
        }
        scrub_outer_cargo_env(&mut cmd);
        // A small shadow stack keeps the guest's linear memory small: fewer
        // pages to map and reset per call. Policies do not recurse deeply; one
        // that does traps on the stack bound instead of eating the heap.
        cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Clink-arg=-zstack-size=65536");
        // One codegen unit with LTO: smaller modules, fewer functions to compile.
        // opt-level 3 whatever the workspace's release profile says: measured
        // on the reference policies (instructions per fresh-instance call),
        // "s" was 16 % and "z" 46 % slower, and both components were larger.
        cmd.args(["--config", "profile.release.lto=true"])
            .args(["--config", "profile.release.codegen-units=1"])
            .args(["--config", "profile.release.opt-level=3"]);
        let status = cmd
            .status()
            .with_context(|| format!("running cargo to build policy `{}`", self.package))?;
        if !status.success() {
            bail!(
                "cargo build of policy `{}` for {} failed ({status})",
                self.package,
                self.target.triple()
            );
        }
        let file = format!("{}.wasm", self.package.replace('-', "_"));
        let path = self
            .target_dir
            .join(self.target.triple())
            .join("release")
            .join(file);
        if !path.exists() {
            bail!(
                "cargo built `{}` but {} is missing: is the crate a `cdylib`?",
                self.package,
                path.display()
            );
        }
        Ok(path)
    }
}

/// Shorthand for `Build::in_workspace(root, package).target(target).run()`.
pub fn build_component(workspace_root: &Path, package: &str, target: Target) -> Result<PathBuf> {
    Build::in_workspace(workspace_root, package)
        .target(target)
        .run()
}

/// Wrap a core module built with the SDK's bindings into a component.
pub fn componentize(core_module: &[u8]) -> Result<Vec<u8>> {
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(core_module)?
        .encode()
}

/// The workspace root, found from a crate's manifest directory by walking up
/// to the first `Cargo.toml` with a `[workspace]` table.
pub fn workspace_root_from(manifest_dir: &Path) -> Result<PathBuf> {
    for dir in manifest_dir.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if let Ok(text) = std::fs::read_to_string(&manifest)
            && text.lines().any(|l| l.trim() == "[workspace]")
        {
            return Ok(dir.to_path_buf());
        }
    }
    bail!("no workspace Cargo.toml above {}", manifest_dir.display())
}

/// Variables the outer cargo sets for a build script or test that would
/// change what the inner build does (its target, its flags, a clippy
/// wrapper) or where it writes.
fn scrub_outer_cargo_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let drop = key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_TARGET_")
            || key.starts_with("DEP_")
            || matches!(
                key,
                "RUSTFLAGS"
                    | "CARGO_ENCODED_RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
                    | "TARGET"
                    | "HOST"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
                    | "RUSTC_LINKER"
                    | "CARGO_LLVM_COV"
                    | "LLVM_PROFILE_FILE"
            );
        if drop {
            cmd.env_remove(key);
        }
    }
}

fn ensure_target_installed(target: Target) -> Result<()> {
    let sysroot = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let lib = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target.triple());
    if lib.exists() {
        return Ok(());
    }
    // rust-toolchain.toml lists the targets, but rustup only installs them
    // when it installs the toolchain; add the missing one once.
    let status = Command::new("rustup")
        .args(["target", "add", target.triple()])
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        _ => bail!(
            "the Rust target {t} is not installed; run `rustup target add {t}`",
            t = target.triple()
        ),
    }
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    // Write then rename, so a file watcher never sees half a module.
    let tmp = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
