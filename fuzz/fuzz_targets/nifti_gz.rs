#![no_main]
//! Fuzz the amri-io reader for `x.nii.gz` files.
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::read_as("x.nii.gz", data));
