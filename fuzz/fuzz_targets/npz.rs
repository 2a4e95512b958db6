#![no_main]
//! Fuzz the amri-io reader for `x.npz` files.
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::read_as("x.npz", data));
