#![no_main]
//! Fuzz protocol TOML parsing and validation.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = amri_protocol::Protocol::from_toml(text, "fuzz.toml");
    }
});
