//! 8×8 bitmap text (font8x8) drawn into `[row, col, 3]` RGB pictures, glyph `n` of a line at
//! column `x0 + 8 n`; characters without a glyph leave their cell as it is.

use font8x8::UnicodeFonts;
use ndarray::Array3;

/// A figure label at `(y0, x0)`: white glyphs (ASCII) with a shadow: every other pixel of the
/// glyph cells that is not black is dimmed to a third, so the label reads on bright tiles.
pub fn label(rgb: &mut Array3<u8>, y0: usize, x0: usize, text: &str) {
    let (h, w, _) = rgb.dim();
    for (n, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                let on = bits & (1 << gx) != 0;
                let (y, x) = (y0 + gy, x0 + n * 8 + gx);
                if y < h && x < w {
                    for c in 0..3 {
                        if on {
                            rgb[[y, x, c]] = 255;
                        } else if rgb[[y, x, c]] > 0 {
                            rgb[[y, x, c]] /= 3;
                        }
                    }
                }
            }
        }
    }
}

/// A caption at `(y0, x0)`: white glyphs only (ASCII, Latin-1 and Greek, e.g. `σ`), the
/// background left as it is (captions sit on a black strip).
pub fn caption(canvas: &mut Array3<u8>, y0: usize, x0: usize, text: &str) {
    let (h, w, _) = canvas.dim();
    for (n, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::LATIN_FONTS.get(ch))
            .or_else(|| font8x8::GREEK_FONTS.get(ch))
            .unwrap_or([0; 8]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                let (y, x) = (y0 + gy, x0 + n * 8 + gx);
                if y < h && x < w && bits & (1 << gx) != 0 {
                    for c in 0..3 {
                        canvas[[y, x, c]] = 255;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_glyph_pixels_and_shadows_the_rest() {
        let mut rgb = Array3::<u8>::from_elem((10, 10, 3), 90);
        label(&mut rgb, 1, 1, "I");
        // font8x8's glyph: bit k of row r is pixel (r, k)
        let glyph = font8x8::BASIC_FONTS.get('I').unwrap_or([0; 8]);
        assert!(glyph.iter().any(|b| *b != 0));
        for (y, bits) in glyph.iter().enumerate() {
            for x in 0..8 {
                let on = bits & (1 << x) != 0;
                assert_eq!(
                    rgb[[1 + y, 1 + x, 0]],
                    if on { 255 } else { 30 },
                    "({y}, {x})"
                );
            }
        }
        // outside the glyph cell nothing changes
        assert_eq!(rgb[[0, 0, 0]], 90);
        assert_eq!(rgb[[9, 9, 2]], 90);
    }

    #[test]
    fn caption_draws_greek_and_leaves_the_background() {
        let mut a = Array3::<u8>::from_elem((8, 8, 3), 7);
        caption(&mut a, 0, 0, "σ");
        let lit = a.iter().filter(|v| **v == 255).count();
        let glyph = font8x8::GREEK_FONTS.get('σ').unwrap_or([0; 8]);
        let bits: u32 = glyph.iter().map(|b| b.count_ones()).sum();
        assert!(bits > 0);
        assert_eq!(lit, 3 * bits as usize);
        assert_eq!(
            a.iter().filter(|v| **v == 7).count(),
            3 * (64 - bits as usize)
        );
    }
}
