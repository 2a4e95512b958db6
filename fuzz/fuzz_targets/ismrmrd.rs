#![no_main]
//! Fuzz the amri-io ISMRMRD reader (HDF5 with `/dataset/xml` and `/dataset/data`) directly, so
//! that inputs which lose the ISMRMRD layout are not handed to the fastMRI reader instead.
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
#[allow(dead_code)] // `read_as` serves the targets that go through `read_all`
mod common;

fuzz_target!(|data: &[u8]| {
    let p = common::scratch("x.h5");
    if std::fs::write(&p, data).is_ok() {
        let _ = amri_io::ismrmrd::read(&p);
    }
});
