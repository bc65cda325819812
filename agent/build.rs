//! Links the `muster` binary with its start-up and idle code packed together (optimised
//! builds on x86_64 Linux with rust-lld, rustc's default linker there since 1.90).
//!
//! An idle agent runs about 1,700 functions, scattered over 15 MB of machine code; the
//! kernel maps code in 64 KiB runs around each page touched, so nearly all of it ended up
//! resident. `link/symbol-order.txt` lists those functions (see `link/README.md` for how
//! it is made); lld places them first, so they share a few dozen runs. A name the build no
//! longer has is skipped, so a stale list costs only some of the gain.

use std::path::Path;
use std::process::Command;

fn main() {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("link/symbol-order.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    println!("cargo:rerun-if-env-changed=MUSTER_NO_SYMBOL_ORDER");
    let optimised = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !optimised
        || target != "x86_64-unknown-linux-gnu"
        || std::env::var_os("MUSTER_NO_SYMBOL_ORDER").is_some()
        || !list.exists()
        || !rustc_links_with_lld()
    {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        list.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// Whether rustc is 1.90 or later, where x86_64 Linux links with rust-lld unless told
/// otherwise, and nothing tells it otherwise (GNU ld does not know
/// `--symbol-ordering-file`): no linker configured, no linker flags.
fn rustc_links_with_lld() -> bool {
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if std::env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("linker")
        || flags.contains("fuse-ld")
    {
        return false;
    }
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
