fn main() {
    println!("gomlx {}", env!("CARGO_PKG_VERSION"));
}
