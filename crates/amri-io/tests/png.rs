//! PNG export: decode what was written with the `png` crate and check windowed grey levels.

// Test helpers unwrap: a failure here is a failed test, not a user-facing error.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use amri_io::png::{auto_window, write_gray, write_rgb, PngOptions};
use ndarray::{Array2, Array3};

/// Decodes a PNG into (width, height, color type, bit depth, bytes).
fn decode(p: &Path) -> (u32, u32, png::ColorType, png::BitDepth, Vec<u8>) {
    let dec = png::Decoder::new(BufReader::new(File::open(p).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (
        info.width,
        info.height,
        info.color_type,
        info.bit_depth,
        buf,
    )
}

fn ramp() -> Array2<f32> {
    // 2 rows x 4 cols: below, at min, middle, at max / above, NaN, quarter, max.
    Array2::from_shape_vec(
        (2, 4),
        vec![-10.0, 0.0, 50.0, 100.0, 150.0, f32::NAN, 25.0, 100.0],
    )
    .unwrap()
}

#[test]
fn eight_bit_window_maps_known_points() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.png");
    let opts = PngOptions {
        window: Some((0.0, 100.0)),
        bit_depth: 8,
    };
    write_gray(&p, ramp().view(), &opts).unwrap();
    let (w, h, ct, bd, px) = decode(&p);
    assert_eq!(
        (w, h, ct, bd),
        (4, 2, png::ColorType::Grayscale, png::BitDepth::Eight)
    );
    // round(t * 255): 0.5 -> 127.5 -> 128, 0.25 -> 63.75 -> 64; row 0 is the first line.
    assert_eq!(px, vec![0, 0, 128, 255, 255, 0, 64, 255]);
    // The same window given as level/width.
    let q = d.path().join("b.png");
    write_gray(&q, ramp().view(), &PngOptions::level_width(50.0, 100.0)).unwrap();
    assert_eq!(decode(&q).4, px);
}

#[test]
fn sixteen_bit_is_big_endian_full_range() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("a.png");
    let opts = PngOptions {
        window: Some((0.0, 100.0)),
        bit_depth: 16,
    };
    write_gray(&p, ramp().view(), &opts).unwrap();
    let (w, h, _, bd, px) = decode(&p);
    assert_eq!((w, h, bd), (4, 2, png::BitDepth::Sixteen));
    let v: Vec<u16> = px
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    // 0.5 * 65535 = 32767.5 -> 32768; 0.25 * 65535 = 16383.75 -> 16384.
    assert_eq!(v, vec![0, 0, 32768, 65535, 65535, 0, 16384, 65535]);
}

#[test]
fn auto_window_is_robust_to_a_hot_pixel() {
    // 0..=199 in a 10x20 image, then one hot pixel replaces the last sample.
    let mut img = Array2::from_shape_fn((10, 20), |(r, c)| (r * 20 + c) as f32);
    img[[9, 19]] = 1e6;
    let (lo, hi) = auto_window(img.view()).unwrap();
    // n = 200: nearest ranks round(0.005*199) = 1 and round(0.995*199) = 198.
    assert_eq!((lo, hi), (1.0, 198.0));
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("auto.png");
    write_gray(&p, img.view(), &PngOptions::default()).unwrap();
    let px = decode(&p).4;
    assert_eq!(px[0], 0); // 0 < lo
    assert_eq!(px[1], 0); // lo
    assert_eq!(px[198], 255); // hi
    assert_eq!(px[199], 255); // the hot pixel saturates instead of setting the scale
                              // A mid value: (99.5 - 1) / 197 * 255 = 127.5 -> sample 99 gives round(98/197*255) = 127.
    assert_eq!(px[99], 127);
}

#[test]
fn rgb_round_trips_and_bad_options_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("rgb.png");
    let rgb = Array3::from_shape_fn((3, 2, 3), |(r, c, k)| (r * 50 + c * 20 + k * 7) as u8);
    write_rgb(&p, rgb.view()).unwrap();
    let (w, h, ct, _, px) = decode(&p);
    assert_eq!((w, h, ct), (2, 3, png::ColorType::Rgb));
    assert_eq!(px, rgb.iter().copied().collect::<Vec<_>>());

    let bad = PngOptions {
        window: None,
        bit_depth: 12,
    };
    let e = write_gray(&d.path().join("x.png"), ramp().view(), &bad).unwrap_err();
    assert!(e.to_string().contains("bit depth 12"), "{e}");
    let inverted = PngOptions {
        window: Some((5.0, 1.0)),
        bit_depth: 8,
    };
    assert!(write_gray(&d.path().join("y.png"), ramp().view(), &inverted).is_err());
    let two = Array3::<u8>::zeros((2, 2, 2));
    assert!(write_rgb(&d.path().join("z.png"), two.view()).is_err());
    assert!(!d.path().join("x.png").exists());
}
