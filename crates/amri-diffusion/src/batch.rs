//! Training batches: one mini-batch of corrupted (or clean) data with its masks, the input of a
//! training step ([`crate::train::Trainer::step`]). The variant chooses the loss.

use candle_core::Tensor;

use crate::checkpoint::Objective;
use crate::error::Result;

/// One mini-batch, NCHW `f32`, masks `[N, 1, H, W]` (or broadcastable) in {0, 1}.
#[derive(Debug, Clone)]
pub enum Batch {
    /// Image-domain corruption: `x_a = A ⊙ x0` `[N, 2, H, W]`, A and Ã ⊆ A.
    AmbientPixel {
        /// `A ⊙ x0`, real/imag.
        x_a: Tensor,
        /// A.
        mask_a: Tensor,
        /// Ã.
        mask_tilde: Tensor,
    },
    /// Single-coil Cartesian k-space: `y = M ⊙ F x0` `[N, 2, H, W]` centred, M and M̃ ⊆ M.
    AmbientKspace {
        /// `M ⊙ F x0`, real/imag.
        y: Tensor,
        /// M.
        mask_a: Tensor,
        /// M̃.
        mask_tilde: Tensor,
    },
    /// Clean images `x0` `[N, 2, H, W]`.
    Supervised {
        /// x0, real/imag.
        x0: Tensor,
    },
    /// Multi-coil k-space: `y_c = M ⊙ F(S_c x0)` `[N, coils, 2, H, W]` centred, the coil maps
    /// `[N, coils, 2, H, W]` estimated from the ACS of `y` only, M and M̃ ⊆ M `[N, 1, H, W]`;
    /// trained with [`crate::loss::multicoil_kspace_loss`] (network input and card objective as
    /// [`Objective::AmbientKspace`]).
    AmbientMulticoil {
        /// `M ⊙ F(S_c x0)` per coil, real/imag.
        y: Tensor,
        /// Estimated coil maps (image domain), real/imag.
        maps: Tensor,
        /// M.
        mask_a: Tensor,
        /// M̃.
        mask_tilde: Tensor,
    },
    /// An ambient batch ([`Batch::AmbientPixel`] or [`Batch::AmbientKspace`]) whose data carry
    /// known Gaussian noise: trained with the double-Tweedie losses
    /// ([`crate::loss::tweedie_pixel_loss`], [`crate::loss::tweedie_kspace_loss`]), σ drawn above
    /// σ_n.
    Noisy {
        /// The ambient batch with the noisy data.
        inner: Box<Batch>,
        /// `[N]` noise standard deviation of each real and imaginary part of the data.
        sigma_n: Tensor,
    },
}

impl Batch {
    /// The objective this batch trains.
    pub fn objective(&self) -> Objective {
        match self {
            Batch::AmbientPixel { .. } => Objective::AmbientPixel,
            Batch::AmbientKspace { .. } => Objective::AmbientKspace,
            Batch::Supervised { .. } => Objective::Supervised,
            Batch::AmbientMulticoil { .. } => Objective::AmbientKspace,
            Batch::Noisy { inner, .. } => inner.objective(),
        }
    }

    /// The same batch with `f` applied to every tensor (e.g. moved to another device).
    pub fn map(&self, f: &impl Fn(&Tensor) -> Result<Tensor>) -> Result<Batch> {
        Ok(match self {
            Batch::AmbientPixel {
                x_a,
                mask_a,
                mask_tilde,
            } => Batch::AmbientPixel {
                x_a: f(x_a)?,
                mask_a: f(mask_a)?,
                mask_tilde: f(mask_tilde)?,
            },
            Batch::AmbientKspace {
                y,
                mask_a,
                mask_tilde,
            } => Batch::AmbientKspace {
                y: f(y)?,
                mask_a: f(mask_a)?,
                mask_tilde: f(mask_tilde)?,
            },
            Batch::Supervised { x0 } => Batch::Supervised { x0: f(x0)? },
            Batch::AmbientMulticoil {
                y,
                maps,
                mask_a,
                mask_tilde,
            } => Batch::AmbientMulticoil {
                y: f(y)?,
                maps: f(maps)?,
                mask_a: f(mask_a)?,
                mask_tilde: f(mask_tilde)?,
            },
            Batch::Noisy { inner, sigma_n } => Batch::Noisy {
                inner: Box::new(inner.map(f)?),
                sigma_n: f(sigma_n)?,
            },
        })
    }

    /// The batch's data tensor (`x_a`, `y` or `x0`; the inner batch's for [`Batch::Noisy`]).
    pub(crate) fn data(&self) -> &Tensor {
        match self {
            Batch::AmbientPixel { x_a, .. } => x_a,
            Batch::AmbientKspace { y, .. } => y,
            Batch::Supervised { x0 } => x0,
            Batch::AmbientMulticoil { y, .. } => y,
            Batch::Noisy { inner, .. } => inner.data(),
        }
    }
}
