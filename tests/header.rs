//! include/gomlx.h must equal a fresh cbindgen generation from src/ffi.
//! Regenerate with `GOMLX_BLESS=1 cargo test --test header`.

use std::path::PathBuf;

#[test]
fn committed_header_is_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut fresh = Vec::new();
    // Only src/ffi (and the modules it declares) is the ABI: parsing the whole
    // crate would export every public constant and type of the engine too.
    cbindgen::Builder::new().with_src(root.join("src/ffi/mod.rs")).with_config(config).generate().expect("cbindgen generation").write(&mut fresh);
    let fresh = String::from_utf8(fresh).unwrap();
    let path = root.join("include/gomlx.h");
    if std::env::var_os("GOMLX_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(fresh.contains("gm_last_error"), "generated header lacks gm_last_error");
    assert_eq!(committed, fresh, "include/gomlx.h is stale: run GOMLX_BLESS=1 cargo test --test header and commit it");
}
