#![no_main]
//! Fuzz the BART cfl/hdr reader: the first line-terminated part of the input is the `.hdr`,
//! the rest the `.cfl` data.
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
#[allow(dead_code)] // uses `scratch` only: the cfl pair is two files, not one `read_as` input
mod common;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (hdr, cfl) = data.split_at(split);
    let h = common::scratch("x.hdr");
    let c = common::scratch("x.cfl");
    if std::fs::write(&h, hdr).is_ok() && std::fs::write(&c, cfl.get(1..).unwrap_or(&[])).is_ok() {
        let _ = amri_io::read_all(&c);
    }
});
