//! Print a GGUF file's metadata (long arrays abbreviated), tensor infos and mapped config.
//! `cargo run --example gguf_dump -- FILE`
use gomlx::models::gguf::{hf_config, GgufFile, Value};

fn main() -> gomlx::Result<()> {
    let path = std::env::args().nth(1).expect("usage: gguf_dump FILE");
    let f = GgufFile::open(&path)?;
    println!("version {} alignment {} data_offset {}", f.version, f.alignment, f.data_offset);
    for (k, v) in &f.metadata {
        match v {
            Value::Array(a) if a.len() > 8 => println!("{k} = [{} x {}] {:?} ...", a.len(), a[0].type_name(), &a[..4]),
            Value::String(s) if s.len() > 200 => println!("{k} = {:?}...", &s[..200]),
            _ => println!("{k} = {v:?}"),
        }
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in &f.tensors {
        *counts.entry(t.ty.name()).or_insert(0) += 1;
        if t.name.starts_with("blk.0.") || !t.name.starts_with("blk.") {
            println!("{} {:?} {}", t.name, t.dims, t.ty);
        }
    }
    println!("types {counts:?}");
    println!("{}", serde_json::to_string_pretty(&hf_config(&f)?).unwrap());
    Ok(())
}
