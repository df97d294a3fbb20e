//! Link-time settings for the `myelin` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Pack the binary's relative relocations (DT_RELR, glibc 2.36+, GNU ld
    // 2.38+ or lld). A position-independent executable has one relocation per
    // pointer in its read-only data; the classic table of them is about 560 KB
    // for Myelin, and start-up reads all of it into memory. Packed, it is a few
    // kilobytes. ld leaves it out (with a warning) where the C library cannot
    // apply packed relocations.
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
