//! Linker flags for the XDP object.
fn main() {
    // bpf-linker by default asks LLVM to expand memcpy "in order" (for JITs
    // that pattern-match copies), and as a side effect every memset,
    // padding and zeroed structs included, becomes a call to a byte-by-byte
    // memset loop: a BPF function call per struct literal on the per-packet
    // path. Without it LLVM writes small memsets and copies as plain stores.
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
