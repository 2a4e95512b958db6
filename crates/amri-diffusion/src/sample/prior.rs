//! Loading a trained prior for inference, and the SHA-256 of its weights for provenance.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use amri_ops::corruption::Corruption;
use amri_ops::simulate::Acquisition;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use ndarray::Array2;

use super::{InputDomain, PriorDenoiser};
use crate::checkpoint::{
    read_card, resolve_checkpoint, IntensityNorm, ModelCard, Objective, CARD_FILE, EMA_FILE,
};
use crate::error::{DiffusionError, Result};
use crate::loss::DenoiseFn;
use crate::precond::{denoiser, Denoiser};
use crate::sense_input::NetworkInput;

/// A trained prior ready for inference: the denoiser with its **EMA** weights (as constants, so
/// gradients never flow into them), its model card, device and the SHA-256 of the weights file.
pub struct Prior {
    card: ModelCard,
    model: Denoiser,
    dev: Device,
    sha256: String,
    dir: PathBuf,
    acquisition: Option<Acquisition>,
    corruption: Mutex<Option<((usize, usize), Corruption)>>,
}

impl std::fmt::Debug for Prior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prior")
            .field("checkpoint", &self.dir)
            .field("objective", &self.card.objective)
            .field("steps", &self.card.steps)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl Prior {
    /// Loads a checkpoint folder, or a run folder (its `latest` checkpoint), on `dev`. Errors
    /// name the path when it is not a checkpoint or a file is missing or unreadable.
    pub fn load(path: &Path, dev: &Device) -> Result<Prior> {
        if !path.exists() {
            return Err(DiffusionError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            });
        }
        let dir = resolve_checkpoint(path)?;
        let card = read_card(&dir).map_err(|e| match e {
            DiffusionError::Json(j) => DiffusionError::Config(format!(
                "{}: not an amri model card: {j}",
                dir.join(CARD_FILE).display()
            )),
            e => e,
        })?;
        if card.format != "amri-diffusion/1" {
            return Err(DiffusionError::Config(format!(
                "{}: model card format {:?} is not amri-diffusion/1",
                dir.display(),
                card.format
            )));
        }
        if card.denoiser.image_channels != 2 || card.denoiser.mask_channels != 1 {
            return Err(DiffusionError::Unsupported(format!(
                "{}: inference needs a complex-image prior (2 image + 1 mask channels), this one \
                 has {} + {}",
                dir.display(),
                card.denoiser.image_channels,
                card.denoiser.mask_channels
            )));
        }
        if card.normalisation != IntensityNorm::MeasuredPercentile {
            return Err(DiffusionError::Unsupported(format!(
                "{}: the prior was trained on volumes scaled by their clean images ({:?}); \
                 inference scales a scan by its measured data, so this prior would see other \
                 intensities than it learnt: retrain it",
                dir.display(),
                card.normalisation
            )));
        }
        let file = dir.join(EMA_FILE);
        let bytes = std::fs::read(&file).map_err(|source| DiffusionError::Io {
            path: file.clone(),
            source,
        })?;
        let sha256 = sha256_hex(&bytes);
        let tensors = candle_core::safetensors::load_buffer(&bytes, dev).map_err(|e| {
            DiffusionError::Config(format!("{}: not a safetensors file: {e}", file.display()))
        })?;
        drop(bytes);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, dev);
        let model = denoiser(&card.denoiser, vb).map_err(|e| {
            DiffusionError::Config(format!(
                "{}: weights do not match the model card: {e}",
                file.display()
            ))
        })?;
        // training masks come from the acquisition of the card's training record
        let acquisition = card.record.as_ref().map(|r| r.acquisition.clone());
        Ok(Prior {
            card,
            model,
            dev: dev.clone(),
            sha256,
            dir,
            acquisition,
            corruption: Mutex::new(None),
        })
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Lower-case hex SHA-256 of the EMA weights file that was loaded.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The checkpoint folder the weights came from.
    pub fn checkpoint_dir(&self) -> &Path {
        &self.dir
    }

    /// The denoiser (EMA weights).
    pub fn denoiser(&self) -> &Denoiser {
        &self.model
    }

    /// The training acquisition (corruption model) recorded in the card, if any.
    pub fn acquisition(&self) -> Option<&Acquisition> {
        self.acquisition.as_ref()
    }

    /// Height and width given to the network must be multiples of this (inputs are padded).
    pub fn size_multiple(&self) -> usize {
        self.card.denoiser.unet.size_multiple()
    }
}

impl DenoiseFn for Prior {
    fn denoise(&self, x: &Tensor, mask: &Tensor, sigma: &Tensor) -> Result<Tensor> {
        self.model.forward(x, mask, sigma)
    }
}

impl PriorDenoiser for Prior {
    fn input_domain(&self) -> InputDomain {
        match self.card.objective {
            Objective::AmbientPixel => InputDomain::Pixel,
            Objective::AmbientKspace => InputDomain::Kspace,
            Objective::Supervised => InputDomain::Clean,
        }
    }

    fn sigma_data(&self) -> f64 {
        self.card.denoiser.precond.sigma_data
    }

    fn network_input(&self) -> NetworkInput {
        self.card.denoiser.input
    }

    fn device(&self) -> &Device {
        &self.dev
    }

    fn size_multiple(&self) -> usize {
        Prior::size_multiple(self)
    }

    fn training_mask(&self, rows: usize, cols: usize, draw: u64) -> Result<Array2<f32>> {
        let ones = || Ok(Array2::ones((rows, cols)));
        if self.input_domain() == InputDomain::Clean {
            return ones();
        }
        let Some(acq) = &self.acquisition else {
            return ones();
        };
        let mut guard = self
            .corruption
            .lock()
            .map_err(|_| DiffusionError::Config("corruption cache poisoned".into()))?;
        let stale = guard.as_ref().map(|(s, _)| *s) != Some((rows, cols));
        if stale {
            let c = Corruption::new(acq, rows, cols)?;
            *guard = Some(((rows, cols), c));
        }
        let Some((_, c)) = guard.as_ref() else {
            return ones();
        };
        let a = c.measurement(draw, None)?;
        let at = c.further(&a, draw, draw)?;
        Ok(at
            .mask()
            .cloned()
            .unwrap_or_else(|| Array2::ones((rows, cols))))
    }
}

/// SHA-256 (FIPS 180-4) of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = bytes.to_vec();
    let bit_len = (bytes.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    let mut w = [0u32; 64];
    for block in msg.chunks_exact(64) {
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let s1 = v[4].rotate_right(6) ^ v[4].rotate_right(11) ^ v[4].rotate_right(25);
            let ch = (v[4] & v[5]) ^ (!v[4] & v[6]);
            let t1 = v[7]
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = v[0].rotate_right(2) ^ v[0].rotate_right(13) ^ v[0].rotate_right(22);
            let maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
            let t2 = s0.wrapping_add(maj);
            v[7] = v[6];
            v[6] = v[5];
            v[5] = v[4];
            v[4] = v[3].wrapping_add(t1);
            v[3] = v[2];
            v[2] = v[1];
            v[1] = v[0];
            v[0] = t1.wrapping_add(t2);
        }
        for (a, b) in h.iter_mut().zip(v) {
            *a = a.wrapping_add(b);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

/// [`sha256_hex`] of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| DiffusionError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(sha256_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(e: std::io::Error) -> DiffusionError {
        DiffusionError::Io {
            path: "tempdir".into(),
            source: e,
        }
    }

    #[test]
    fn loading_something_that_is_not_a_checkpoint_names_the_path() -> Result<()> {
        let dev = Device::Cpu;
        let e = Prior::load(Path::new("/no/such/model"), &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/model"), "{e}");
        let d = tempfile::tempdir().map_err(io)?;
        let e = Prior::load(d.path(), &dev).unwrap_err().to_string();
        assert!(e.contains("no checkpoint here"), "{e}");
        std::fs::write(d.path().join(CARD_FILE), b"{not json").map_err(io)?;
        let e = Prior::load(d.path(), &dev).unwrap_err().to_string();
        assert!(
            e.contains("model.json") && e.contains("not an amri model card"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn sha256_matches_fips_180_vectors() {
        // FIPS 180-4 / NIST example values.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        // a million 'a' (many blocks)
        assert_eq!(
            sha256_hex(&vec![b'a'; 1_000_000]),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }
}
