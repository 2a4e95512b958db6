//! A 2-D U-Net in candle, in the style of EDM's DDPM++/ADM networks (Karras et al. 2022).
//!
//! Layout: every tensor is NCHW, `f32`. The network maps `x: [N, in_channels, H, W]` and a
//! per-sample noise conditioning `c_noise: [N]` (EDM uses `ln(σ)/4`) to
//! `[N, out_channels, H, W]`. `H` and `W` must be divisible by `space_to_depth · 2^(levels-1)`.
//!
//! Structure:
//! - noise embedding: sinusoidal positional embedding of `c_noise` with `base_channels`
//!   frequencies, then a two-layer SiLU MLP to `emb_channels = 4·base_channels`;
//! - encoder: a 3×3 input conv, then per level `blocks_per_level` residual blocks (GroupNorm →
//!   SiLU → conv3×3, noise embedding added as a per-channel bias, GroupNorm → SiLU → conv3×3,
//!   residual scaled by `1/√2`), self-attention after each block on the levels listed in
//!   `attention_levels`, and 2×2 average-pool downsampling between levels;
//! - middle: residual block with attention, then a plain residual block;
//! - decoder: per level `blocks_per_level + 1` residual blocks each fed the concatenation with
//!   the matching encoder activation (skip connection), nearest 2× upsampling + conv3×3 between
//!   levels;
//! - output: GroupNorm → SiLU → conv3×3 (zero-initialised, so a fresh network outputs 0);
//! - optional FFDNet-style stem and head ([`UNetConfig::space_to_depth`] `f > 1`): the input is
//!   pixel-unshuffled to `f²` times the channels at `1/f` the resolution before the input conv,
//!   and the output conv's `out_channels · f²` channels are pixel-shuffled back.
//!
//! Layers are built by free functions from a [`VarBuilder`] with `vb.pp(...)` scopes, so weights
//! load from safetensors or a `VarMap` by name.

use candle_core::{Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{DiffusionError, Result};
use crate::fused;

/// Largest accepted space-to-depth factor ([`UNetConfig::space_to_depth`]).
pub const MAX_SPACE_TO_DEPTH: usize = 8;

/// Shape and capacity of a [`UNet`]; serialised into model cards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Input channels (for the amri denoiser: 2 image channels (real, imag) + mask channels).
    pub in_channels: usize,
    /// Output channels (for the amri denoiser: 2, real and imaginary parts).
    pub out_channels: usize,
    /// Channels of the first level; level `l` has `base_channels · channel_mult[l]`.
    pub base_channels: usize,
    /// Channel multiplier per resolution level; its length is the number of levels.
    pub channel_mult: Vec<usize>,
    /// Residual blocks per level in the encoder (the decoder has one more per level).
    pub blocks_per_level: usize,
    /// Levels (0 = full resolution, `l` = input / 2^l) that get self-attention after each
    /// residual block; the middle block always has attention. These are the "attention
    /// resolutions" expressed independently of the image size.
    pub attention_levels: Vec<usize>,
    /// Channels per attention head (heads = channels / this, at least 1).
    pub attention_head_channels: usize,
    /// GroupNorm groups; must divide every level's channel count.
    pub groups: usize,
    /// Space-to-depth factor `f` of an FFDNet-style stem and head (1: none). With `f > 1` the
    /// input `[N, C, H, W]` is pixel-unshuffled to `[N, C·f², H/f, W/f]` (lossless), the U-Net
    /// runs at `H/f × W/f` on `in_channels·f²` channels and its `out_channels·f²` outputs are
    /// pixel-shuffled back to `[N, out_channels, H, W]` ([`crate::fused::pixel_unshuffle`]).
    /// Absent in cards written before the stem existed (read as 1), and not written when 1, so
    /// those cards keep their bytes.
    #[serde(default = "no_space_to_depth", skip_serializing_if = "is_one")]
    pub space_to_depth: usize,
}

fn no_space_to_depth() -> usize {
    1
}

fn is_one(f: &usize) -> bool {
    *f == 1
}

impl UNetConfig {
    /// Small preset that trains on a 2-core CPU in minutes at 64×64 (≈0.79 M parameters for
    /// 3 input and 2 output channels): 32 base channels, levels ×(1, 1, 2), one block per level,
    /// attention on the lowest level (16×16 for a 64×64 input).
    pub fn tiny(in_channels: usize, out_channels: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            base_channels: 32,
            channel_mult: vec![1, 1, 2],
            blocks_per_level: 1,
            attention_levels: vec![2],
            attention_head_channels: 32,
            groups: 8,
            space_to_depth: 1,
        }
    }

    /// CPU preset for 256×256 images (≈1.54 M parameters for 3 input and 2 output channels):
    /// `tiny`'s widths over five levels ×(1, 1, 2, 2, 2), one block per level, attention only at
    /// the lowest level (16×16 for a 256×256 input), so that no attention map exceeds 256 tokens.
    pub fn small(in_channels: usize, out_channels: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            base_channels: 32,
            channel_mult: vec![1, 1, 2, 2, 2],
            blocks_per_level: 1,
            attention_levels: vec![4],
            attention_head_channels: 32,
            groups: 8,
            space_to_depth: 1,
        }
    }

    /// CPU preset for clinical matrices (256×256 and up): `tiny`'s widths behind a ×4
    /// space-to-depth stem and depth-to-space head (FFDNet-style, lossless), four levels
    /// ×(1, 1, 2, 2), one block per level, attention at the lowest level and in the middle
    /// (8×8 tokens for a 256×256 input); ≈1.19 M parameters for 3 input and 2 output channels.
    /// A 256×256 image costs about what `tiny` costs at 64×64 (docs/benchmarks.md); sizes must
    /// be multiples of 32.
    pub fn clinical(in_channels: usize, out_channels: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            base_channels: 32,
            channel_mult: vec![1, 1, 2, 2],
            blocks_per_level: 1,
            attention_levels: vec![3],
            attention_head_channels: 32,
            groups: 8,
            space_to_depth: 4,
        }
    }

    /// Preset for real use on a GPU at 256×256: 64 base channels, five levels ×(1, 2, 2, 4, 4),
    /// two blocks per level, attention at the lowest level (16×16 for a 256×256 input); ≈26.9 M
    /// parameters for 3 input and 2 output channels.
    pub fn base(in_channels: usize, out_channels: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            base_channels: 64,
            channel_mult: vec![1, 2, 2, 4, 4],
            blocks_per_level: 2,
            attention_levels: vec![4],
            attention_head_channels: 64,
            groups: 32,
            space_to_depth: 1,
        }
    }

    /// A named preset (`"tiny"`, `"small"`, `"clinical"` or `"base"`).
    pub fn preset(name: &str, in_channels: usize, out_channels: usize) -> Result<Self> {
        match name {
            "tiny" => Ok(Self::tiny(in_channels, out_channels)),
            "small" => Ok(Self::small(in_channels, out_channels)),
            "clinical" => Ok(Self::clinical(in_channels, out_channels)),
            "base" => Ok(Self::base(in_channels, out_channels)),
            other => Err(DiffusionError::Config(format!(
                "unknown U-Net preset {other:?} (known: tiny, small, clinical, base)"
            ))),
        }
    }

    /// Embedding width of the noise-level MLP (`4 · base_channels`).
    pub fn emb_channels(&self) -> usize {
        4 * self.base_channels
    }

    /// Number of resolution levels.
    pub fn levels(&self) -> usize {
        self.channel_mult.len()
    }

    /// Height and width must be multiples of this (`space_to_depth · 2^(levels-1)`).
    pub fn size_multiple(&self) -> usize {
        self.space_to_depth.max(1) << self.levels().saturating_sub(1)
    }

    /// Bytes of the f32 attention maps one training step keeps for a batch of `batch` images of
    /// `rows × cols`: every attention block (encoder `blocks_per_level`, decoder
    /// `blocks_per_level + 1` per listed level, one in the middle at the lowest level) holds
    /// `batch · heads · tokens²` weights, `tokens` = positions at its level after the stem.
    /// Attention is quadratic in the image area, so this is what limits a preset's image size.
    pub fn attention_map_bytes(&self, rows: usize, cols: usize, batch: usize) -> u64 {
        let f = self.space_to_depth.max(1);
        let ch = |l: usize| self.base_channels * self.channel_mult.get(l).copied().unwrap_or(1);
        let per_block = |l: usize| -> u64 {
            let tokens = ((rows / f) >> l) as u64 * ((cols / f) >> l) as u64;
            let heads = (ch(l) / self.attention_head_channels.max(1)).max(1) as u64;
            batch as u64 * heads * tokens * tokens * 4
        };
        let mut total = 0u64;
        for &l in &self.attention_levels {
            if l < self.levels() {
                total += (2 * self.blocks_per_level as u64 + 1) * per_block(l);
            }
        }
        total + per_block(self.levels().saturating_sub(1))
    }

    /// Input channels of the inner U-Net (`in_channels · space_to_depth²`).
    pub fn inner_in_channels(&self) -> usize {
        self.in_channels * self.space_to_depth * self.space_to_depth
    }

    /// Output channels of the inner U-Net (`out_channels · space_to_depth²`).
    pub fn inner_out_channels(&self) -> usize {
        self.out_channels * self.space_to_depth * self.space_to_depth
    }

    /// Checks that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DiffusionError::Config(m));
        if self.in_channels == 0 || self.out_channels == 0 {
            return bad("in_channels and out_channels must be > 0".into());
        }
        if self.base_channels == 0 || self.channel_mult.is_empty() {
            return bad("base_channels must be > 0 and channel_mult non-empty".into());
        }
        if self.groups == 0 || self.attention_head_channels == 0 {
            return bad("groups and attention_head_channels must be > 0".into());
        }
        if !(1..=MAX_SPACE_TO_DEPTH).contains(&self.space_to_depth) {
            return bad(format!(
                "space_to_depth must be 1 (none) to {MAX_SPACE_TO_DEPTH}, got {}",
                self.space_to_depth
            ));
        }
        for (l, &m) in self.channel_mult.iter().enumerate() {
            let c = self.base_channels * m;
            if m == 0 || c % self.groups != 0 {
                return bad(format!(
                    "level {l}: {c} channels is not a positive multiple of groups = {}",
                    self.groups
                ));
            }
        }
        if let Some(&l) = self.attention_levels.iter().find(|&&l| l >= self.levels()) {
            return bad(format!(
                "attention level {l} does not exist ({} levels)",
                self.levels()
            ));
        }
        Ok(())
    }
}

/// Sinusoidal embedding of a per-sample scalar: `[N] → [N, channels]`, `[cos(c·f_k), sin(c·f_k)]`
/// with `f_k = (1/10000)^(k/(channels/2))`, `k = 0..channels/2` (EDM's `PositionalEmbedding`).
pub fn positional_embedding(c: &Tensor, channels: usize) -> Result<Tensor> {
    let half = channels / 2;
    if half == 0 || channels % 2 != 0 {
        return Err(DiffusionError::Config(format!(
            "positional embedding needs an even channel count >= 2, got {channels}"
        )));
    }
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(k as f64) / half as f64 * 10000f64.ln()).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), c.device())?.to_dtype(c.dtype())?;
    let args = c.reshape(((), 1))?.broadcast_mul(&freqs)?;
    Ok(Tensor::cat(&[args.cos()?, args.sin()?], 1)?)
}

/// A 2-D convolution, stride 1, zero padding `k/2` (odd square kernel `k`), with bias.
///
/// On the CPU it runs [`crate::fused::conv2d`] (im2col + GEMM with a hand-written backward), which
/// is also immune to candle 0.9's CPU conv bug for `C_in == H == W` inputs; on other devices
/// [`crate::fused::conv2d_im2col`] (candle 0.9.2's CUDA conv gives wrong weight gradients). Weights are `weight: [C_out, C_in, k, k]` and `bias: [C_out]`, the names
/// and layout of `candle_nn::Conv2d`.
#[derive(Debug, Clone)]
pub struct Conv {
    weight: Tensor,
    bias: Tensor,
}

impl Conv {
    /// `[N, C_in, H, W] → [N, C_out, H, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(fused::conv2d_bias(x, &self.weight, &self.bias)?)
    }

    /// The convolution with a per-image bias `extra: [N, C_out]` added to every pixel of each
    /// output channel (e.g. a noise-level embedding), in the same fused op.
    pub fn forward_plus(&self, x: &Tensor, extra: &Tensor) -> Result<Tensor> {
        let b = self.bias.unsqueeze(0)?.broadcast_add(extra)?;
        Ok(fused::conv2d_bias(x, &self.weight, &b)?)
    }
}

/// A 2-D [`Conv`] with padding `k/2`; `zero_init` sets weight and bias to zero (EDM's
/// `init_zero`), otherwise the initialisation of `candle_nn::conv2d` (Kaiming-normal weights,
/// bias uniform in `±1/sqrt(C_in)`).
pub fn conv2d(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    zero_init: bool,
    vb: VarBuilder,
) -> Result<Conv> {
    if kernel % 2 == 0 {
        return Err(DiffusionError::Config(format!(
            "convolution kernels must be odd, got {kernel}"
        )));
    }
    let (wi, bi) = if zero_init {
        (Init::Const(0.0), Init::Const(0.0))
    } else {
        let bound = 1.0 / (in_c as f64).sqrt();
        (
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
            Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )
    };
    Ok(Conv {
        weight: vb.get_with_hints((out_c, in_c, kernel, kernel), "weight", wi)?,
        bias: vb.get_with_hints(out_c, "bias", bi)?,
    })
}

/// GroupNorm with per-channel affine (`weight`, `bias`: `[C]`, the names of
/// `candle_nn::GroupNorm`), biased variance, `eps = 1e-5`; optionally fused with SiLU.
#[derive(Debug, Clone)]
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
}

/// Builds a [`Norm`] on `channels` channels in `groups` groups (weight 1, bias 0).
pub fn norm(groups: usize, channels: usize, vb: VarBuilder) -> Result<Norm> {
    if groups == 0 || channels % groups != 0 {
        return Err(DiffusionError::Config(format!(
            "{channels} channels do not split into {groups} GroupNorm groups"
        )));
    }
    Ok(Norm {
        weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
        bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
        groups,
    })
}

impl Norm {
    /// `[N, C, H, W] → [N, C, H, W]`, normalised per sample and group.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(fused::group_norm(
            x,
            &self.weight,
            &self.bias,
            self.groups,
            1e-5,
            false,
        )?)
    }

    /// `silu(GroupNorm(x))` in one fused pass on the CPU.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(fused::group_norm(
            x,
            &self.weight,
            &self.bias,
            self.groups,
            1e-5,
            true,
        )?)
    }
}

/// Multi-head self-attention over the `H·W` positions of a feature map, with pre-GroupNorm and a
/// zero-initialised 1×1 output projection; returns only the residual branch.
#[derive(Debug, Clone)]
pub struct Attention {
    norm: Norm,
    qkv: Conv,
    proj: Conv,
    heads: usize,
}

/// Builds an [`Attention`] layer on `channels` channels (`vb` scopes: `norm`, `qkv`, `proj`).
pub fn attention(channels: usize, cfg: &UNetConfig, vb: VarBuilder) -> Result<Attention> {
    let heads = (channels / cfg.attention_head_channels).max(1);
    if channels % heads != 0 {
        return Err(DiffusionError::Config(format!(
            "{channels} channels do not split into {heads} attention heads"
        )));
    }
    Ok(Attention {
        norm: norm(cfg.groups, channels, vb.pp("norm"))?,
        qkv: conv2d(channels, 3 * channels, 1, false, vb.pp("qkv"))?,
        proj: conv2d(channels, channels, 1, true, vb.pp("proj"))?,
        heads,
    })
}

impl Attention {
    /// `[N, C, H, W] → [N, C, H, W]`: `proj(softmax(q kᵀ/√d) v)` (the residual branch).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let d = c / self.heads;
        let qkv = self.qkv.forward(&self.norm.forward(x)?)?;
        // [N, 3, heads, d, HW]
        let qkv = qkv.reshape((n, 3, self.heads, d, h * w))?;
        let q = qkv
            .narrow(1, 0, 1)?
            .squeeze(1)?
            .transpose(2, 3)?
            .contiguous()?; // [N,heads,HW,d]
        let k = qkv.narrow(1, 1, 1)?.squeeze(1)?.contiguous()?; // [N,heads,d,HW]
        let v = qkv
            .narrow(1, 2, 1)?
            .squeeze(1)?
            .transpose(2, 3)?
            .contiguous()?; // [N,heads,HW,d]
        let att = (q.matmul(&k)? * (1.0 / (d as f64).sqrt()))?;
        // candle-nn's fused `softmax_last_dim` has no backward pass in candle 0.9; amri's has
        let att = fused::softmax_last_dim(&att)?;
        let out = att.matmul(&v)?; // [N, heads, HW, d]
        let out = out.transpose(2, 3)?.contiguous()?.reshape((n, c, h, w))?;
        self.proj.forward(&out)
    }
}

/// Residual block with noise-embedding injection and optional self-attention.
#[derive(Debug, Clone)]
pub struct ResBlock {
    norm0: Norm,
    conv0: Conv,
    affine: Linear,
    norm1: Norm,
    conv1: Conv,
    skip: Option<Conv>,
    attn: Option<Attention>,
}

/// Builds a [`ResBlock`] `in_c → out_c` (`vb` scopes: `norm0`, `conv0`, `affine`, `norm1`,
/// `conv1`, `skip` when `in_c != out_c`, `attn` when `with_attention`).
pub fn res_block(
    in_c: usize,
    out_c: usize,
    with_attention: bool,
    cfg: &UNetConfig,
    vb: VarBuilder,
) -> Result<ResBlock> {
    Ok(ResBlock {
        norm0: norm(cfg.groups, in_c, vb.pp("norm0"))?,
        conv0: conv2d(in_c, out_c, 3, false, vb.pp("conv0"))?,
        affine: candle_nn::linear(cfg.emb_channels(), out_c, vb.pp("affine"))?,
        norm1: norm(cfg.groups, out_c, vb.pp("norm1"))?,
        conv1: conv2d(out_c, out_c, 3, true, vb.pp("conv1"))?,
        skip: if in_c != out_c {
            Some(conv2d(in_c, out_c, 1, false, vb.pp("skip"))?)
        } else {
            None
        },
        attn: if with_attention {
            Some(attention(out_c, cfg, vb.pp("attn"))?)
        } else {
            None
        },
    })
}

impl ResBlock {
    /// `x: [N, in_c, H, W]`, `emb: [N, emb_channels]` → `[N, out_c, H, W]`.
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self
            .conv0
            .forward_plus(&self.norm0.forward_silu(x)?, &self.affine.forward(emb)?)?;
        let h = self.conv1.forward(&self.norm1.forward_silu(&h)?)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let mut out = fused::scaled_sum(&h, &skip, std::f64::consts::FRAC_1_SQRT_2)?;
        if let Some(a) = &self.attn {
            out = fused::scaled_sum(&out, &a.forward(&out)?, std::f64::consts::FRAC_1_SQRT_2)?;
        }
        Ok(out)
    }
}

/// The U-Net; build with [`unet`].
#[derive(Debug, Clone)]
pub struct UNet {
    cfg: UNetConfig,
    map0: Linear,
    map1: Linear,
    conv_in: Conv,
    /// Encoder blocks per level.
    enc: Vec<Vec<ResBlock>>,
    mid: Vec<ResBlock>,
    /// Decoder blocks per level (index = level).
    dec: Vec<Vec<ResBlock>>,
    /// Post-upsampling convolutions, `up[l]` goes from level `l+1` to level `l`.
    up: Vec<Conv>,
    out_norm: Norm,
    out_conv: Conv,
}

/// Builds a [`UNet`] from `cfg` (`vb` scopes: `map0`, `map1`, `conv_in`, `enc.{l}.{b}`,
/// `mid.{i}`, `dec.{l}.{b}`, `up.{l}`, `out_norm`, `out_conv`).
pub fn unet(cfg: &UNetConfig, vb: VarBuilder) -> Result<UNet> {
    cfg.validate()?;
    let ch = |l: usize| cfg.base_channels * cfg.channel_mult[l];
    let emb = cfg.emb_channels();
    let map0 = candle_nn::linear(cfg.base_channels, emb, vb.pp("map0"))?;
    let map1 = candle_nn::linear(emb, emb, vb.pp("map1"))?;
    let conv_in = conv2d(cfg.inner_in_channels(), ch(0), 3, false, vb.pp("conv_in"))?;

    // Encoder; record the channel count of every skip activation in push order.
    let mut skips = vec![ch(0)];
    let mut cur = ch(0);
    let mut enc = Vec::with_capacity(cfg.levels());
    for l in 0..cfg.levels() {
        let attn = cfg.attention_levels.contains(&l);
        let mut blocks = Vec::with_capacity(cfg.blocks_per_level);
        for b in 0..cfg.blocks_per_level {
            blocks.push(res_block(
                cur,
                ch(l),
                attn,
                cfg,
                vb.pp(format!("enc.{l}.{b}")),
            )?);
            cur = ch(l);
            skips.push(cur);
        }
        enc.push(blocks);
        if l + 1 < cfg.levels() {
            skips.push(cur); // the downsampled activation
        }
    }
    let last = cfg.levels() - 1;
    let mid = vec![
        res_block(cur, ch(last), true, cfg, vb.pp("mid.0"))?,
        res_block(ch(last), ch(last), false, cfg, vb.pp("mid.1"))?,
    ];
    cur = ch(last);

    let mut dec: Vec<Vec<ResBlock>> = (0..cfg.levels()).map(|_| Vec::new()).collect();
    let mut up = Vec::with_capacity(last);
    for l in 0..last {
        // up[l] maps level l+1's channels (at level l's resolution) to themselves.
        up.push(conv2d(
            ch(l + 1),
            ch(l + 1),
            3,
            false,
            vb.pp(format!("up.{l}")),
        )?);
    }
    for l in (0..cfg.levels()).rev() {
        let attn = cfg.attention_levels.contains(&l);
        for b in 0..=cfg.blocks_per_level {
            let skip_c = skips.pop().ok_or_else(|| {
                DiffusionError::Config("internal: skip bookkeeping underflow".into())
            })?;
            dec[l].push(res_block(
                cur + skip_c,
                ch(l),
                attn,
                cfg,
                vb.pp(format!("dec.{l}.{b}")),
            )?);
            cur = ch(l);
        }
        if l > 0 {
            // upsampling keeps `cur` channels; next level's first block sees cur + skip.
            debug_assert_eq!(cur, ch(l));
        }
    }
    let out_norm = norm(cfg.groups, ch(0), vb.pp("out_norm"))?;
    let out_conv = conv2d(ch(0), cfg.inner_out_channels(), 3, true, vb.pp("out_conv"))?;
    Ok(UNet {
        cfg: cfg.clone(),
        map0,
        map1,
        conv_in,
        enc,
        mid,
        dec,
        up,
        out_norm,
        out_conv,
    })
}

impl UNet {
    /// The configuration this network was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// `x: [N, in_channels, H, W]`, `c_noise: [N]` → `[N, out_channels, H, W]`.
    pub fn forward(&self, x: &Tensor, c_noise: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != self.cfg.in_channels {
            return Err(DiffusionError::Shape(format!(
                "U-Net expects {} input channels, got {c}",
                self.cfg.in_channels
            )));
        }
        let m = self.cfg.size_multiple();
        let f = self.cfg.space_to_depth;
        if h % m != 0 || w % m != 0 || h == 0 || w == 0 {
            let why = if f > 1 {
                format!(
                    " (space-to-depth ×{f} times the U-Net's downsampling ×{})",
                    m / f
                )
            } else {
                String::new()
            };
            return Err(DiffusionError::Shape(format!(
                "U-Net input {h}×{w} must be a non-empty multiple of {m} in both axes{why}"
            )));
        }
        if c_noise.dims() != [n] {
            return Err(DiffusionError::Shape(format!(
                "c_noise must be [{n}], got {:?}",
                c_noise.dims()
            )));
        }
        let emb = positional_embedding(c_noise, self.cfg.base_channels)?;
        let emb = self.map0.forward(&emb)?.silu()?;
        let emb = self.map1.forward(&emb)?.silu()?;

        let mut hcur = self.conv_in.forward(&fused::pixel_unshuffle(x, f)?)?;
        let mut skips = vec![hcur.clone()];
        for (l, blocks) in self.enc.iter().enumerate() {
            for b in blocks {
                hcur = b.forward(&hcur, &emb)?;
                skips.push(hcur.clone());
            }
            if l + 1 < self.enc.len() {
                hcur = hcur.avg_pool2d(2)?;
                skips.push(hcur.clone());
            }
        }
        for b in &self.mid {
            hcur = b.forward(&hcur, &emb)?;
        }
        for l in (0..self.dec.len()).rev() {
            for b in &self.dec[l] {
                let s = skips.pop().ok_or_else(|| {
                    DiffusionError::Config("internal: skip bookkeeping underflow".into())
                })?;
                hcur = b.forward(&Tensor::cat(&[&hcur, &s], 1)?, &emb)?;
            }
            if l > 0 {
                hcur = fused::upsample2x(&hcur)?;
                hcur = self.up[l - 1].forward(&hcur)?;
            }
        }
        let out = self.out_conv.forward(&self.out_norm.forward_silu(&hcur)?)?;
        Ok(fused::pixel_shuffle(&out, f)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn small() -> UNetConfig {
        UNetConfig {
            in_channels: 3,
            out_channels: 2,
            base_channels: 8,
            channel_mult: vec![1, 2],
            blocks_per_level: 1,
            attention_levels: vec![1],
            attention_head_channels: 8,
            groups: 4,
            space_to_depth: 1,
        }
    }

    fn param_count(vm: &VarMap) -> usize {
        vm.all_vars().iter().map(|v| v.elem_count()).sum()
    }

    #[test]
    fn output_shape_and_zero_init() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let net = unet(&small(), VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        let x = Tensor::randn(0f32, 1., (2, 3, 16, 16), &dev)?;
        let c = Tensor::new(&[-0.3f32, 0.5], &dev)?;
        let y = net.forward(&x, &c)?;
        assert_eq!(y.dims(), &[2, 2, 16, 16]);
        // EDM zero-initialises the output conv: a fresh network returns exactly zero.
        let m = y.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(m, 0.0);
        Ok(())
    }

    #[test]
    fn noise_level_changes_output_after_perturbing_output_conv() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let net = unet(&small(), VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        // make every zero-initialised weight non-zero so the whole path is live
        for (name, var) in vm.data().lock().expect("varmap lock").iter() {
            if name.contains("conv1") || name.contains("proj") || name.contains("out_conv") {
                var.set(&Tensor::randn(0f32, 0.1, var.shape(), &dev)?)?;
            }
        }
        let x = Tensor::randn(0f32, 1., (1, 3, 16, 16), &dev)?;
        let y0 = net.forward(&x, &Tensor::new(&[-1f32], &dev)?)?;
        let y1 = net.forward(&x, &Tensor::new(&[1f32], &dev)?)?;
        let diff = (y0 - y1)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff > 1e-4, "noise conditioning has no effect: {diff}");
        Ok(())
    }

    #[test]
    fn batch_elements_are_independent() -> Result<()> {
        // Samples in a batch do not interact (GroupNorm and attention are per sample).
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let net = unet(&small(), VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        for (name, var) in vm.data().lock().expect("varmap lock").iter() {
            if name.contains("conv1") || name.contains("proj") || name.contains("out_conv") {
                var.set(&Tensor::randn(0f32, 0.1, var.shape(), &dev)?)?;
            }
        }
        let x = Tensor::randn(0f32, 1., (2, 3, 8, 8), &dev)?;
        let c = Tensor::new(&[0.2f32, -0.7], &dev)?;
        let both = net.forward(&x, &c)?;
        let one = net.forward(&x.narrow(0, 1, 1)?, &c.narrow(0, 1, 1)?)?;
        let diff = (both.narrow(0, 1, 1)? - one)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "batch elements interact: {diff}");
        Ok(())
    }

    #[test]
    fn rejects_bad_shapes_and_configs() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let net = unet(&small(), VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        let c = Tensor::new(&[0f32], &dev)?;
        assert!(net
            .forward(&Tensor::zeros((1, 3, 15, 16), DType::F32, &dev)?, &c)
            .is_err());
        assert!(net
            .forward(&Tensor::zeros((1, 2, 16, 16), DType::F32, &dev)?, &c)
            .is_err());
        let mut bad = small();
        bad.groups = 3;
        assert!(bad.validate().is_err());
        let mut bad = small();
        bad.attention_levels = vec![2];
        assert!(bad.validate().is_err());
        assert!(UNetConfig::preset("huge", 3, 2).is_err());
        Ok(())
    }

    /// The GPU path: off the CPU (or in another dtype) the U-Net runs candle's composed ops
    /// instead of amri's fused CPU kernels. Running the same weights in f64 on the CPU takes
    /// that path; its output and every weight gradient must match the fused f32 path.
    #[test]
    fn composed_ops_path_matches_the_fused_cpu_kernels() -> Result<()> {
        let dev = Device::Cpu;
        // without and with a ×2 space-to-depth stem (fused kernel vs reshape/permute)
        for f in [1usize, 2] {
            let cfg = UNetConfig {
                space_to_depth: f,
                ..small()
            };
            let vm32 = VarMap::new();
            let net32 = unet(&cfg, VarBuilder::from_varmap(&vm32, DType::F32, &dev))?;
            for (name, var) in vm32.data().lock().expect("varmap lock").iter() {
                if name.contains("conv1") || name.contains("proj") || name.contains("out_conv") {
                    var.set(&Tensor::randn(0f32, 0.1, var.shape(), &dev)?)?;
                }
            }
            let vm64 = VarMap::new();
            let net64 = unet(&cfg, VarBuilder::from_varmap(&vm64, DType::F64, &dev))?;
            {
                let src = vm32.data().lock().expect("varmap lock");
                for (name, var) in vm64.data().lock().expect("varmap lock").iter() {
                    var.set(&src[name].as_tensor().to_dtype(DType::F64)?)?;
                }
            }
            let x = Tensor::randn(0f32, 1., (2, 3, 16, 16), &dev)?;
            let c = Tensor::new(&[-0.4f32, 0.9], &dev)?;
            let r = Tensor::randn(0f32, 1., (2, 2, 16, 16), &dev)?;
            let y32 = net32.forward(&x, &c)?;
            let y64 = net64.forward(&x.to_dtype(DType::F64)?, &c.to_dtype(DType::F64)?)?;
            let rel = |a: &Tensor, b: &Tensor| -> Result<f64> {
                let a = a.to_dtype(DType::F64)?;
                let b = b.to_dtype(DType::F64)?;
                let d = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
                let n = b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
                Ok(d / n.max(1e-30))
            };
            let e = rel(&y32, &y64)?;
            assert!(e < 1e-4, "f {f}: forward differs: relative error {e}");
            let g32 = (y32 * &r)?.sum_all()?.backward()?;
            let g64 = (y64 * r.to_dtype(DType::F64)?)?.sum_all()?.backward()?;
            let v64 = vm64.data().lock().expect("varmap lock");
            for (name, var) in vm32.data().lock().expect("varmap lock").iter() {
                let missing = || DiffusionError::Config(format!("no grad for {name}"));
                let a = g32.get(var.as_tensor()).ok_or_else(missing)?;
                let b = g64.get(v64[name].as_tensor()).ok_or_else(missing)?;
                let e = rel(a, b)?;
                assert!(
                    e < 1e-3,
                    "f {f}, {name}: gradient differs, relative error {e}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn tiny_preset_size_and_gradients_reach_every_weight() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let cfg = UNetConfig::tiny(3, 2);
        let net = unet(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        let n = param_count(&vm);
        assert!(
            (200_000..=1_000_000).contains(&n),
            "tiny has {n} parameters"
        );
        eprintln!("tiny preset: {n} parameters");
        // After one non-zero output conv, all parameters receive gradient.
        for (name, var) in vm.data().lock().expect("varmap lock").iter() {
            if name.contains("conv1") || name.contains("proj") || name.contains("out_conv") {
                var.set(&Tensor::randn(0f32, 0.05, var.shape(), &dev)?)?;
            }
        }
        let x = Tensor::randn(0f32, 1., (1, 3, 16, 16), &dev)?;
        let y = net.forward(&x, &Tensor::new(&[0.1f32], &dev)?)?;
        let grads = y.sqr()?.sum_all()?.backward()?;
        for (name, var) in vm.data().lock().expect("varmap lock").iter() {
            let g = grads
                .get(var.as_tensor())
                .ok_or_else(|| DiffusionError::Config(format!("no grad for {name}")))?;
            let gmax = g.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(gmax.is_finite(), "{name}: non-finite gradient");
        }
        Ok(())
    }

    /// Direct (loop) convolution with zero padding `k/2`, no bias: the independent reference.
    fn naive_conv(
        x: &[f32],
        w: &[f32],
        n: usize,
        ci: usize,
        co: usize,
        hw: usize,
        k: usize,
    ) -> Vec<f32> {
        let p = (k / 2) as isize;
        let mut out = vec![0f32; n * co * hw * hw];
        for b in 0..n {
            for o in 0..co {
                for y in 0..hw {
                    for xx in 0..hw {
                        let mut acc = 0f32;
                        for i in 0..ci {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let sy = y as isize + ky as isize - p;
                                    let sx = xx as isize + kx as isize - p;
                                    if sy >= 0
                                        && sx >= 0
                                        && (sy as usize) < hw
                                        && (sx as usize) < hw
                                    {
                                        acc += x
                                            [((b * ci + i) * hw + sy as usize) * hw + sx as usize]
                                            * w[((o * ci + i) * k + ky) * k + kx];
                                    }
                                }
                            }
                        }
                        out[((b * co + o) * hw + y) * hw + xx] = acc;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn conv_matches_direct_convolution_including_channels_equal_size() -> Result<()> {
        // C_in == H == W is the shape where candle 0.9's own CPU conv2d is wrong.
        let dev = Device::Cpu;
        for &(ci, hw) in &[(8usize, 8usize), (3, 8), (4, 4)] {
            let vm = VarMap::new();
            let conv = conv2d(
                ci,
                5,
                3,
                false,
                VarBuilder::from_varmap(&vm, DType::F32, &dev),
            )?;
            let bias = conv.bias.clone();
            let conv_nb = Conv {
                weight: conv.weight.clone(),
                bias: bias.zeros_like()?,
            };
            let x = Tensor::randn(0f32, 1., (2, ci, hw, hw), &dev)?;
            let got = conv_nb.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
            let want = naive_conv(
                &x.flatten_all()?.to_vec1::<f32>()?,
                &conv.weight.flatten_all()?.to_vec1::<f32>()?,
                2,
                ci,
                5,
                hw,
                3,
            );
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-4, "C_in {ci}, {hw}×{hw}: max err {err}");
            assert_eq!(bias.dims(), &[5]);
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        // f64 network, without and with a ×2 space-to-depth stem; central differences on the
        // first entry of every parameter and on a few input pixels (the stem's backward).
        let dev = Device::Cpu;
        for f in [1usize, 2] {
            let vm = VarMap::new();
            let cfg = UNetConfig {
                base_channels: 8,
                space_to_depth: f,
                ..small()
            };
            let net = unet(&cfg, VarBuilder::from_varmap(&vm, DType::F64, &dev))?;
            for (name, var) in vm.data().lock().expect("varmap lock").iter() {
                if name.contains("conv1") || name.contains("proj") || name.contains("out_conv") {
                    var.set(&Tensor::randn(0f64, 0.1, var.shape(), &dev)?)?;
                }
            }
            let x = candle_core::Var::randn(0f64, 1., (2, 3, 8, 8), &dev)?;
            let c = Tensor::new(&[0.1f64, -0.4], &dev)?;
            let tgt = Tensor::randn(0f64, 1., (2, 2, 8, 8), &dev)?;
            let loss = || -> Result<Tensor> {
                Ok((net.forward(x.as_tensor(), &c)? - &tgt)?.sqr()?.sum_all()?)
            };
            let grads = loss()?.backward()?;
            let data = vm.data().lock().expect("varmap lock");
            let mut vars: Vec<(String, candle_core::Var, usize)> = data
                .iter()
                .map(|(n, v)| (n.clone(), v.clone(), 0))
                .collect();
            // input pixels at different offsets inside the 2×2 blocks
            for k in [0usize, 1, 8, 9, 77, 190] {
                vars.push((format!("input[{k}]"), x.clone(), k));
            }
            for (name, v, k) in vars {
                let g = grads
                    .get(v.as_tensor())
                    .ok_or_else(|| DiffusionError::Config(format!("no grad for {name}")))?
                    .flatten_all()?
                    .to_vec1::<f64>()?;
                let orig = v.as_tensor().flatten_all()?.to_vec1::<f64>()?;
                let eps = 1e-4;
                let eval = |d: f64| -> Result<f64> {
                    let mut p = orig.clone();
                    p[k] += d;
                    v.set(&Tensor::from_vec(p, v.shape(), &dev)?)?;
                    Ok(loss()?.to_scalar::<f64>()?)
                };
                let fd = (eval(eps)? - eval(-eps)?) / (2.0 * eps);
                v.set(&Tensor::from_vec(orig, v.shape(), &dev)?)?;
                assert!(
                    (g[k] - fd).abs() <= 1e-4 * fd.abs().max(1.0),
                    "space_to_depth {f}, {name}: autograd {} vs fd {fd}",
                    g[k]
                );
            }
        }
        Ok(())
    }

    #[test]
    fn space_to_depth_network_shapes_sizes_and_errors() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let cfg = UNetConfig {
            space_to_depth: 4,
            ..small()
        };
        // two levels: ×2 downsampling inside, so sizes must be multiples of 4·2
        assert_eq!(cfg.size_multiple(), 8);
        assert_eq!(
            (cfg.inner_in_channels(), cfg.inner_out_channels()),
            (48, 32)
        );
        let net = unet(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        let shapes = crate::checkpoint::varmap_shapes(&vm);
        assert_eq!(shapes["conv_in.weight"].1, vec![8, 48, 3, 3]);
        assert_eq!(shapes["out_conv.weight"].1, vec![32, 8, 3, 3]);
        let c = Tensor::new(&[0.3f32], &dev)?;
        let y = net.forward(&Tensor::randn(0f32, 1., (1, 3, 16, 24), &dev)?, &c)?;
        assert_eq!(y.dims(), &[1, 2, 16, 24]);
        assert_eq!(y.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
        // 12 is a multiple of the stem's 4 but not of 4·2: a clear error, not a panic
        let err = net
            .forward(&Tensor::zeros((1, 3, 12, 16), DType::F32, &dev)?, &c)
            .err()
            .ok_or_else(|| DiffusionError::Config("12×16 accepted".into()))?
            .to_string();
        assert!(
            err.contains("12×16") && err.contains("multiple of 8") && err.contains("×4"),
            "{err}"
        );
        for bad in [0usize, MAX_SPACE_TO_DEPTH + 1] {
            let cfg = UNetConfig {
                space_to_depth: bad,
                ..small()
            };
            assert!(cfg.validate().is_err(), "space_to_depth {bad} accepted");
        }
        Ok(())
    }

    /// Cards without the field read as no stem, `f = 1` is not written (old cards keep their
    /// bytes), `f = 4` round-trips.
    #[test]
    fn config_without_space_to_depth_reads_and_writes_as_before() -> Result<()> {
        // a card's network description written before the stem existed
        let old = r#"{"in_channels":3,"out_channels":2,"base_channels":32,"channel_mult":[1,1,2],
            "blocks_per_level":1,"attention_levels":[2],"attention_head_channels":32,"groups":8}"#;
        let cfg: UNetConfig = serde_json::from_str(old)?;
        assert_eq!(cfg, UNetConfig::tiny(3, 2));
        assert!(!serde_json::to_string(&cfg)?.contains("space_to_depth"));
        let cfg4 = UNetConfig {
            space_to_depth: 4,
            ..cfg
        };
        let s = serde_json::to_string(&cfg4)?;
        assert!(s.contains(r#""space_to_depth":4"#), "{s}");
        assert_eq!(serde_json::from_str::<UNetConfig>(&s)?, cfg4);
        Ok(())
    }

    #[test]
    fn base_preset_builds_at_a_size_between_tiny_and_100m() -> Result<()> {
        let vm = VarMap::new();
        unet(
            &UNetConfig::base(3, 2),
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )?;
        let n = param_count(&vm);
        eprintln!("base preset: {n} parameters");
        assert!(
            (5_000_000..100_000_000).contains(&n),
            "base has {n} parameters"
        );
        Ok(())
    }

    #[test]
    fn attention_map_bytes_counts_every_attention_block() {
        // tiny at 64×64, batch 8: level 2 is 16×16 = 256 tokens, 64 channels = 2 heads of 32;
        // three blocks there (1 encoder + 2 decoder) plus the middle one
        let tiny = UNetConfig::tiny(3, 2);
        assert_eq!(
            tiny.attention_map_bytes(64, 64, 8),
            4 * 8 * 2 * 256 * 256 * 4
        );
        // quadratic in the area: 256×256 is 256× the bytes of 64×64
        assert_eq!(
            tiny.attention_map_bytes(256, 256, 8),
            256 * tiny.attention_map_bytes(64, 64, 8)
        );
        // the ×4 stem of `clinical` brings 256×256 back to tiny's 64×64 cost at level 3 (8×8)
        let c = UNetConfig::clinical(3, 2);
        assert_eq!(c.space_to_depth, 4);
        assert!(c.attention_map_bytes(256, 256, 8) < tiny.attention_map_bytes(64, 64, 8));
    }

    #[test]
    fn small_preset_runs_at_a_non_square_size_with_16x16_attention() -> Result<()> {
        let vm = VarMap::new();
        let cfg = UNetConfig::small(3, 2);
        let net = unet(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
        let n = param_count(&vm);
        assert!(
            (1_000_000..2_000_000).contains(&n),
            "small has {n} parameters"
        );
        assert_eq!(cfg.size_multiple(), 16);
        let x = Tensor::randn(0f32, 1., (1, 3, 32, 48), &Device::Cpu)?;
        let y = net.forward(&x, &Tensor::new(&[0.1f32], &Device::Cpu)?)?;
        assert_eq!(y.dims(), &[1, 2, 32, 48]);
        assert!(net
            .forward(&x.narrow(3, 0, 40)?, &Tensor::new(&[0.1f32], &Device::Cpu)?)
            .is_err());
        Ok(())
    }

    #[test]
    fn clinical_preset_runs_at_256_and_rejects_sizes_off_its_multiple() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let cfg = UNetConfig::preset("clinical", 3, 2)?;
        let net = unet(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        let n = param_count(&vm);
        eprintln!("clinical preset: {n} parameters");
        assert!(
            (1_000_000..1_500_000).contains(&n),
            "clinical has {n} parameters"
        );
        // ×4 stem, then three ×2 poolings
        assert_eq!(cfg.size_multiple(), 32);
        let c = Tensor::new(&[0.1f32], &dev)?;
        let y = net.forward(&Tensor::randn(0f32, 1., (1, 3, 256, 224), &dev)?, &c)?;
        assert_eq!(y.dims(), &[1, 2, 256, 224]);
        let err = net
            .forward(&Tensor::zeros((1, 3, 240, 256), DType::F32, &dev)?, &c)
            .err()
            .ok_or_else(|| DiffusionError::Config("240×256 accepted".into()))?;
        assert!(err.to_string().contains("multiple of 32"), "{err}");
        Ok(())
    }

    #[test]
    fn config_round_trips_through_json() -> Result<()> {
        let cfg = UNetConfig::base(3, 2);
        let s = serde_json::to_string(&cfg)?;
        let back: UNetConfig = serde_json::from_str(&s)?;
        assert_eq!(cfg, back);
        cfg.validate()?;
        Ok(())
    }
}
