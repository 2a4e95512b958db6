//! The `amri` command line.
fn main() {}
