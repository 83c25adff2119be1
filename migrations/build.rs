// `embed_migrations!` reads the folders at compile time; make cargo rebuild
// when a migration is added, edited or removed.
fn main() {
    println!("cargo:rerun-if-changed=tenant");
    println!("cargo:rerun-if-changed=control");
}
