//! Embeds the browser app (`daemon/web/`) into the binary: a table of its files with content hashes and, where the host has `gzip`, pre-compressed copies.
//! Also lays out the release binary's start-up code together (see [`order_startup_code`]).
//!
//! The daemon serves the app itself with nothing to deploy beside the binary,
//! so every file is compiled in with `include_bytes!`. Compressing here, once
//! per build, keeps the daemon free of a compression crate and of work per
//! request. `gzip` is part of every Debian system; where it is missing the
//! app is served uncompressed and the build says so.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// The placeholder in `index.html` that becomes the bundle's path.
const BUNDLE_PLACEHOLDER: &str = "%BUNDLE%";

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    embed_web_app(&manifest);
    order_startup_code(&manifest);
}

/// Has the linker put the functions `daemon/link/order.txt` lists (what the
/// daemon runs to start and to serve its first requests, in the order it
/// first runs them) at the front of the `rerod` binary's code.
///
/// The kernel maps a program's code in 64 KiB runs around each page that
/// executes, so an idle daemon whose start-up code is scattered holds most
/// of its code in memory. Kept together, that code takes a few runs instead
/// (`daemon/link/README.md` has the figures and how to remake the list).
///
/// Only where the toolchain links with its own LLD, which takes the order
/// (x86-64 Linux, by default since Rust 1.90), for release builds, and not
/// when a build names another linker (nor from a checkout whose path has a
/// comma, which the linker's argument cannot carry). A list that no longer
/// matches the code's symbol names costs nothing but the gain.
fn order_startup_code(manifest: &Path) {
    let order = manifest.join("link").join("order.txt");
    println!("cargo::rerun-if-changed={}", order.display());
    for var in
        ["PROFILE", "TARGET", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER", "RUSTC_LINKER"]
    {
        println!("cargo::rerun-if-env-changed={var}");
    }
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let own_lld = env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu")
        && env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_none()
        && env::var_os("RUSTC_LINKER").is_none()
        && !env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default().contains("link");
    // The compiler driver splits -Wl, arguments at commas.
    let path_fits = !order.to_string_lossy().contains(',');
    if release && own_lld && path_fits && order.is_file() {
        println!("cargo::rustc-link-arg-bin=rerod=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo::rustc-link-arg-bin=rerod=-Wl,--no-warn-symbol-ordering");
    }
}

/// Writes `web_assets.rs` into `OUT_DIR`: the app's files, their hashes and
/// compressed copies.
fn embed_web_app(manifest: &Path) {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let web = manifest.join("web");
    println!("cargo::rerun-if-changed={}", web.display());

    let mut names: Vec<String> = fs::read_dir(&web)
        .expect("daemon/web/ holds the app")
        .map(|entry| entry.expect("daemon/web/ is readable").file_name().into_string().expect("UTF-8 file names"))
        .filter(|name| content_type(name).is_some())
        .collect();
    names.sort();
    for name in &names {
        println!("cargo::rerun-if-changed={}", web.join(name).display());
    }

    // One hash over every asset names the bundle: a new build of any file
    // gives every file a new URL, so browsers may cache them for good.
    let mut bundle = Fnv::new();
    let mut assets = Vec::new();
    for name in names.iter().filter(|n| n.as_str() != "index.html") {
        let bytes = fs::read(web.join(name)).expect("asset is readable");
        bundle.write(name.as_bytes());
        bundle.write(&[0]);
        bundle.write(&bytes);
        assets.push((name.clone(), web.join(name), bytes));
    }
    let bundle = bundle.hex();

    let index = fs::read_to_string(web.join("index.html")).expect("daemon/web/index.html");
    let index = index.replace(BUNDLE_PLACEHOLDER, &format!("/app/{bundle}"));
    let index_path = out.join("index.html");
    fs::write(&index_path, &index).expect("OUT_DIR is writable");

    let mut code = String::new();
    writeln!(code, "/// The bundle's hash: assets live under `/app/{{BUNDLE}}/`.").ok();
    writeln!(code, "pub(crate) const BUNDLE: &str = {bundle:?};").ok();
    writeln!(code, "/// The app's page, with the bundle's path filled in.").ok();
    writeln!(code, "pub(crate) const INDEX: Asset = {};", entry(&out, "index.html", &index_path, index.as_bytes()))
        .ok();
    writeln!(code, "/// Every other file of the app, by name.").ok();
    writeln!(code, "pub(crate) const ASSETS: &[Asset] = &[").ok();
    for (name, path, bytes) in &assets {
        writeln!(code, "    {},", entry(&out, name, path, bytes)).ok();
    }
    writeln!(code, "];").ok();
    fs::write(out.join("web_assets.rs"), code).expect("OUT_DIR is writable");
}

/// One `Asset { .. }` expression for the generated table.
fn entry(out: &Path, name: &str, path: &Path, bytes: &[u8]) -> String {
    let mut hash = Fnv::new();
    hash.write(bytes);
    let gzip = match compress(out, name, path) {
        Some(gz) => format!("Some(include_bytes!({:?}))", gz.display().to_string()),
        None => "None".to_owned(),
    };
    format!(
        "Asset {{ name: {name:?}, content_type: {:?}, body: include_bytes!({:?}), gzip: {gzip}, hash: {:?} }}",
        content_type(name).expect("only known kinds are listed"),
        path.display().to_string(),
        hash.hex(),
    )
}

/// `path` gzipped into OUT_DIR, or `None` without a usable `gzip` (or when
/// compressing does not make it smaller).
fn compress(out: &Path, name: &str, path: &Path) -> Option<PathBuf> {
    let result = Command::new("gzip").args(["-9", "-n", "-c"]).arg(path).output();
    match result {
        Ok(output) if output.status.success() => {
            let original = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if output.stdout.len() as u64 >= original {
                return None;
            }
            let gz = out.join(format!("{name}.gz"));
            fs::write(&gz, &output.stdout).expect("OUT_DIR is writable");
            Some(gz)
        }
        _ => {
            println!("cargo::warning=gzip is not available; the web app is served uncompressed");
            None
        }
    }
}

/// The `Content-Type` of a file the app ships, by its extension.
fn content_type(name: &str) -> Option<&'static str> {
    let extension = name.rsplit_once('.')?.1;
    Some(match extension {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "webmanifest" => "application/manifest+json",
        _ => return None,
    })
}

/// 64-bit FNV-1a: enough to tell builds of a file apart (it names cache
/// entries; it is no defence against anyone).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}
