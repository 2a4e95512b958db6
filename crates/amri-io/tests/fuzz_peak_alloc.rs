//! Fuzz findings that made a reader allocate far more than the file could hold: each must now be
//! a clear error naming the file, reached with a small peak of live heap memory. A counting global
//! allocator measures the peak, so this file holds a single test (tests in one binary share the
//! allocator and run on parallel threads).
// A global allocator needs `unsafe impl GlobalAlloc`; it only forwards to the system allocator.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn add(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::SeqCst) + n;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            add(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Reads fixture `name`, expecting an error holding the file name and `expect`; returns the peak
/// of live heap bytes above those live before the read.
fn peak_of_failed_read(name: &str, expect: &str) -> usize {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(name);
    let file_len = std::fs::metadata(&p).unwrap().len();
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let e = amri_io::read_all(&p).unwrap_err().to_string();
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert!(e.contains(name), "{e}");
    assert!(e.contains(expect), "{e}");
    eprintln!("{name}: {file_len} bytes, peak {peak} live heap bytes: {e}");
    peak
}

#[test]
fn dicom_findings_are_refused_without_a_large_allocation() {
    // Bound: 4 MiB, hundreds of times the 6 kB files and far below what they once claimed.
    const BOUND: usize = 4 << 20;
    let cases = [
        // Finding 5 (2026-11-23): Columns (0028,0011) mutated to VR SL with 2 bytes. dicom-rs
        // read no value but counted 2 bytes, read the rest of the data set 2 bytes early and
        // allocated 764 MB for a misread length before failing with "Could not read data set
        // token".
        (
            "dicom_columns_sl_length_2.dcm",
            "element (0028,0011) at byte 1404 has VR SL and 2 bytes, not a whole number of \
             4-byte values",
        ),
        // Finding 6 (2026-12-04): a deflated file whose meta group length (0002,0000) covers an
        // off-group element (0003,0016). dicom-rs reads that element as part of the meta group
        // and inflates from the byte after it; amri's check stopped at the first non-0002 tag and
        // inflated from 16 bytes earlier, so it checked another data set than the one dicom-rs
        // parsed, which asked for 2.4 GB.
        (
            "dicom_offgroup_element_in_meta_group.dcm",
            "deflated data set cannot be inflated: incomplete deflate stream",
        ),
        // Finding 4: a nested item longer than its sequence once made dicom-rs allocate 4 GB.
        (
            "dicom_item_longer_than_sequence.dcm",
            "past the end of its enclosing sequence or item",
        ),
    ];
    for (name, expect) in cases {
        let peak = peak_of_failed_read(name, expect);
        assert!(peak < BOUND, "{name}: peak {peak} bytes of live heap");
    }
}
