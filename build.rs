//! Link-time settings for the `myelin` binary.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=MYELIN_LINK_ORDER");
    storage_functions();
    let target = env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        return;
    }
    // Pack the binary's relative relocations (DT_RELR, glibc 2.36+, GNU ld
    // 2.38+ or lld). A position-independent executable has one relocation per
    // pointer in its read-only data; the classic table of them is about 560 KB
    // for Myelin, and start-up reads all of it into memory. Packed, it is a few
    // kilobytes. ld leaves it out (with a warning) where the C library cannot
    // apply packed relocations.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");

    // Lay out the functions that start-up and the common requests run next to
    // each other, in the order `link-order.txt` lists them (written by
    // `scripts/link-order`). The kernel maps an executable's code 64 KiB at a
    // time around each page first touched, and start-up's functions scattered
    // over the whole binary make most of its code resident before the first
    // request; grouped, they take a fraction of it (docs/benchmarks-history.md,
    // "Run 20"). Only the names the file and the binary share
    // are placed; a stale file costs nothing but the gain.
    if link_order_applies(&target) {
        let file = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("link-order.txt");
        if file.exists() {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                file.display()
            );
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
}

/// Writes `$OUT_DIR/storage_functions.rs`: every function of `src/storage/`
/// with the file and line where it starts, sorted, as the label its queries
/// carry in `myelin_db_query_seconds` (`events.room_events_window`; the
/// module of `mod.rs` is `storage`). `storage::observe` finds the function
/// a query was made from by its caller's location (`#[track_caller]` on
/// `Storage::pool` and `Storage::begin`), so no call site names itself.
fn storage_functions() {
    let dir = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("src/storage");
    println!("cargo:rerun-if-changed=src/storage");
    let mut rows = Vec::new();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    for path in files {
        let (Some(stem), Some("rs")) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        let module = if stem == "mod" { "storage" } else { stem };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            if let Some(name) = function_name(line) {
                rows.push((
                    format!("src/storage/{stem}.rs"),
                    i + 1,
                    format!("{module}.{name}"),
                ));
            }
        }
    }
    // Sorted as `storage::observe::label_of` searches it.
    rows.sort();
    let rows: Vec<String> = rows
        .iter()
        .map(|(file, line, label)| format!("    (\"{file}\", {line}, \"{label}\"),\n"))
        .collect();
    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("storage_functions.rs");
    let table = format!(
        "/// (file, first line, label) of each function in src/storage, by file and line.\n\
         pub(super) static FUNCTIONS: &[(&str, u32, &str)] = &[\n{}];\n",
        rows.concat()
    );
    std::fs::write(out, table).expect("OUT_DIR is writable");
}

/// The name of the function a line of Rust starts (`pub(crate) async fn
/// name<'a>(`), if it starts one.
fn function_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    (end > 0).then(|| &rest[..end])
}

/// Whether the binary is linked by rust-lld (the default for
/// x86_64-unknown-linux-gnu since Rust 1.90), which takes a symbol ordering
/// file, in a release build. GNU ld would reject the option, so any linker
/// chosen by hand turns it off, as does `MYELIN_LINK_ORDER=0`.
fn link_order_applies(target: &str) -> bool {
    if env::var("MYELIN_LINK_ORDER").is_ok_and(|v| v == "0") {
        return false;
    }
    if target != "x86_64-unknown-linux-gnu" || env::var("PROFILE").as_deref() != Ok("release") {
        return false;
    }
    let linker_env = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace('-', "_")
    );
    println!("cargo:rerun-if-env-changed={linker_env}");
    if env::var_os(&linker_env).is_some() {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if ["linker", "link-self-contained", "fuse-ld"]
        .iter()
        .any(|f| flags.contains(f))
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("-vV").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .and_then(|r| r.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
