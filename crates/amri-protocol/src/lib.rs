//! Protocols: how a scan is acquired (or corrupted) and how it is reconstructed, named and kept in
//! TOML files, the way users name a setup.
//!
//! ```toml
//! name = "brain-r4-cartesian"
//! description = "Brain, 8 coils, 1-D random Cartesian R=4, 8 % centre lines"
//!
//! [acquisition]
//! coils = 8
//! noise_level = 0.002        # σ per complex sample / max |image|
//! seed = 0
//! [acquisition.corruption]
//! type = "kspace"            # kspace | pixel | boxes | gaussian_cs
//! pattern = "random"         # random | equispaced | equispaced_fraction | poisson
//! acceleration = 4.0
//! center_fraction = 0.08
//!
//! [reconstruction]
//! method = "l1-wavelet"      # zero-filled | cg-sense | l1-wavelet | tv | one-step | iterative
//! lambda = 0.005
//! iterations = 100
//! ```
//!
//! The learned-prior methods take their own keys (all optional; the command line can give
//! them too):
//!
//! ```toml
//! [reconstruction]
//! method = "iterative"       # posterior sampling with a diffusion prior
//! model = "models/brain-r4"  # checkpoint or run folder (relative to the working directory)
//! steps = 50                 # sampler noise levels (network calls per sample)
//! samples = 4                # posterior samples per scan → mean and per-pixel std
//! zeta = 1.0                 # likelihood step size in (0, 1]
//! data_consistency = true    # one-step: replace measured samples by the data
//! seed = 0
//! ```
//!
//! Unknown keys, wrong types, missing required fields and out-of-range values are errors that
//! name the file, the key and the allowed values. The presets shipped in `protocols/` are built
//! into the library ([`builtin`]), so an installed `amri` knows them by name.

use std::path::{Path, PathBuf};

use amri_ops::acquisition::Acquisition;
use amri_ops::OpsError;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors of loading or validating a protocol; each names the file (or preset) it came from.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not parse or does not match the schema (unknown key, wrong type...).
    #[error("{origin}: {msg}")]
    Parse {
        /// File or preset name.
        origin: String,
        /// The parser's message (names the key and, for enumerations, the allowed values).
        msg: String,
    },
    /// A value is out of its allowed range.
    #[error("{origin}: {key} = {value}: {allowed}")]
    Invalid {
        /// File or preset name.
        origin: String,
        /// Dotted key, e.g. `acquisition.corruption.acceleration`.
        key: String,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// No preset or file by that name.
    #[error("no protocol named '{0}': give a .toml file or one of: {1}")]
    NotFound(String, String),
}

/// Result with [`ProtocolError`].
pub type Result<T> = std::result::Result<T, ProtocolError>;

/// A reconstruction method a protocol can name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Inverse FFT of the zero-filled data; root-sum-of-squares over coils (the default).
    #[default]
    ZeroFilled,
    /// Conjugate gradient on the SENSE normal equations (optionally Tikhonov).
    CgSense,
    /// l1-wavelet compressed sensing (FISTA).
    L1Wavelet,
    /// Total-variation compressed sensing (PDHG).
    Tv,
    /// One network call of a learned diffusion prior: `E[x0 | A y]` (needs a model).
    OneStep,
    /// Posterior sampling with a learned diffusion prior: mean and per-pixel standard deviation
    /// of several samples (needs a model).
    Iterative,
}

impl Method {
    /// The classical methods (no learned prior), in the order `--help` lists them.
    pub const ALL: [Method; 4] = [
        Method::ZeroFilled,
        Method::CgSense,
        Method::L1Wavelet,
        Method::Tv,
    ];

    /// The methods that need a learned prior (a model).
    pub const PRIOR: [Method; 2] = [Method::OneStep, Method::Iterative];

    /// Every method: [`Method::ALL`] then [`Method::PRIOR`].
    pub const EVERY: [Method; 6] = [
        Method::ZeroFilled,
        Method::CgSense,
        Method::L1Wavelet,
        Method::Tv,
        Method::OneStep,
        Method::Iterative,
    ];

    /// Whether the method needs a learned prior (`--model`).
    pub fn is_prior(self) -> bool {
        Method::PRIOR.contains(&self)
    }

    /// The kebab-case name used in TOML and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::ZeroFilled => "zero-filled",
            Method::CgSense => "cg-sense",
            Method::L1Wavelet => "l1-wavelet",
            Method::Tv => "tv",
            Method::OneStep => "one-step",
            Method::Iterative => "iterative",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Method::EVERY
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Method::EVERY.iter().map(|m| m.name()).collect();
                format!("unknown method '{s}'; expected one of {}", names.join(", "))
            })
    }
}

/// How a protocol reconstructs: the method and its parameters (absent ones take the method's
/// defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconstruction {
    /// The method.
    pub method: Method,
    /// Regularisation weight λ (l1-wavelet, TV, Tikhonov for CG-SENSE), in BART's scaling.
    #[serde(default)]
    pub lambda: Option<f32>,
    /// Iteration count.
    #[serde(default)]
    pub iterations: Option<usize>,
    /// Relative-change stopping tolerance.
    #[serde(default)]
    pub tol: Option<f32>,
    /// Seed of random choices (wavelet cycle-spinning shifts; sampler noise).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Learned prior: checkpoint or run folder (one-step, iterative).
    #[serde(default)]
    pub model: Option<PathBuf>,
    /// Sampler noise levels, i.e. network calls per sample (iterative).
    #[serde(default)]
    pub steps: Option<usize>,
    /// Posterior samples per scan (iterative).
    #[serde(default)]
    pub samples: Option<usize>,
    /// Likelihood step size ζ in (0, 1] (iterative).
    #[serde(default)]
    pub zeta: Option<f64>,
    /// Replace measured samples by the measured data after the network call (one-step).
    #[serde(default)]
    pub data_consistency: Option<bool>,
    /// Average the network's estimate over the flips and transposes of the slice (one-step;
    /// absent: on when the prior was trained with flips and transposes).
    #[serde(default)]
    pub average_flips: Option<bool>,
}

impl Reconstruction {
    /// Settings of `method` with every optional key absent.
    pub fn new(method: Method) -> Self {
        Self {
            method,
            lambda: None,
            iterations: None,
            tol: None,
            seed: None,
            model: None,
            steps: None,
            samples: None,
            zeta: None,
            data_consistency: None,
            average_flips: None,
        }
    }
}

/// A named acquisition and, optionally, its reconstruction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocol {
    /// Short name, e.g. `brain-r4-cartesian`.
    pub name: String,
    /// One line saying what the protocol is for.
    #[serde(default)]
    pub description: String,
    /// How the data are acquired or corrupted.
    pub acquisition: Acquisition,
    /// How they are reconstructed.
    #[serde(default)]
    pub reconstruction: Option<Reconstruction>,
}

macro_rules! preset {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../../protocols/", $name, ".toml")),
        )
    };
}

/// The presets shipped in `protocols/`, as `(name, TOML text)`.
pub const BUILTIN: &[(&str, &str)] = &[
    preset!("brain-r4-cartesian"),
    preset!("brain-r8-cartesian"),
    preset!("brain-r4-equispaced"),
    preset!("brain-poisson-r6"),
    preset!("singlecoil-r4-cartesian"),
    preset!("singlecoil-r4-ambient-train"),
    preset!("pixel-90"),
    preset!("pixel-90-ambient-train"),
    preset!("box-corruption"),
    preset!("gaussian-cs"),
];

/// Every built-in preset, parsed and validated.
pub fn builtin() -> Result<Vec<Protocol>> {
    BUILTIN
        .iter()
        .map(|(n, t)| Protocol::from_toml(t, &format!("preset {n}")))
        .collect()
}

impl Protocol {
    /// Parses and validates TOML text; `origin` (file or preset name) prefixes every error.
    pub fn from_toml(text: &str, origin: &str) -> Result<Protocol> {
        let p: Protocol = toml::from_str(text).map_err(|e| ProtocolError::Parse {
            origin: origin.to_string(),
            msg: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        p.validate(origin)?;
        Ok(p)
    }

    /// Loads a protocol file.
    pub fn load(path: &Path) -> Result<Protocol> {
        let meta = std::fs::metadata(path).map_err(|e| ProtocolError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        if meta.len() > 1 << 20 {
            return Err(ProtocolError::Parse {
                origin: path.display().to_string(),
                msg: format!(
                    "{} bytes is too large for a protocol file (1 MiB at most)",
                    meta.len()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ProtocolError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// A preset by name, or a file by path (anything ending in `.toml` or naming an existing file).
    pub fn resolve(name_or_path: &str) -> Result<Protocol> {
        let p = Path::new(name_or_path);
        if name_or_path.ends_with(".toml") || p.is_file() {
            return Self::load(p);
        }
        match BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            Some((n, t)) => Self::from_toml(t, &format!("preset {n}")),
            None => Err(ProtocolError::NotFound(
                name_or_path.to_string(),
                BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    /// The protocol as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }

    /// Checks every value's range; errors name the key and the allowed values.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |key: &str, value: String, allowed: &str| {
            Err(ProtocolError::Invalid {
                origin: origin.to_string(),
                key: key.to_string(),
                value,
                allowed: allowed.to_string(),
            })
        };
        if self.name.trim().is_empty() {
            return bad("name", "\"\"".into(), "a non-empty name");
        }
        // The acquisition's limits live in amri-ops (one copy); the protocol adds the key path.
        if let Err(e) = self.acquisition.validate() {
            return Err(match e {
                OpsError::Invalid {
                    key,
                    value,
                    allowed,
                } => ProtocolError::Invalid {
                    origin: origin.to_string(),
                    key: format!("acquisition.{key}"),
                    value,
                    allowed,
                },
                other => ProtocolError::Invalid {
                    origin: origin.to_string(),
                    key: "acquisition".into(),
                    value: "(see the message)".into(),
                    allowed: other.to_string(),
                },
            });
        }
        if let Some(r) = &self.reconstruction {
            if let Some(l) = r.lambda {
                if !(l.is_finite() && l >= 0.0) {
                    return bad("reconstruction.lambda", l.to_string(), "a number ≥ 0");
                }
            }
            if let Some(i) = r.iterations {
                if !(1..=100_000).contains(&i) {
                    return bad(
                        "reconstruction.iterations",
                        i.to_string(),
                        "an integer in [1, 100000]",
                    );
                }
            }
            if let Some(t) = r.tol {
                if !(t.is_finite() && t >= 0.0) {
                    return bad("reconstruction.tol", t.to_string(), "a number ≥ 0");
                }
            }
            if let Some(s) = r.steps {
                if !(1..=10_000).contains(&s) {
                    return bad(
                        "reconstruction.steps",
                        s.to_string(),
                        "an integer in [1, 10000]",
                    );
                }
            }
            if let Some(n) = r.samples {
                if !(1..=1000).contains(&n) {
                    return bad(
                        "reconstruction.samples",
                        n.to_string(),
                        "an integer in [1, 1000]",
                    );
                }
            }
            if let Some(z) = r.zeta {
                if !(z.is_finite() && z > 0.0 && z <= 1.0) {
                    return bad("reconstruction.zeta", z.to_string(), "a number in (0, 1]");
                }
            }
            if let Some(m) = &r.model {
                if m.as_os_str().is_empty() {
                    return bad(
                        "reconstruction.model",
                        "\"\"".into(),
                        "a checkpoint or run folder",
                    );
                }
            }
            if !r.method.is_prior() {
                let prior_keys = [
                    ("model", r.model.is_some()),
                    ("steps", r.steps.is_some()),
                    ("samples", r.samples.is_some()),
                    ("zeta", r.zeta.is_some()),
                    ("data_consistency", r.data_consistency.is_some()),
                ];
                if let Some((k, _)) = prior_keys.iter().find(|(_, set)| *set) {
                    return bad(
                        &format!("reconstruction.{k}"),
                        format!("set for method = \"{}\"", r.method.name()),
                        "only with method = \"one-step\" or \"iterative\" (a learned prior)",
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_preset_parses_and_validates() {
        let all = builtin().unwrap();
        assert_eq!(all.len(), BUILTIN.len());
        for (p, (n, _)) in all.iter().zip(BUILTIN) {
            assert_eq!(&p.name, n, "preset file name and name = must agree");
            // Serialising and parsing again gives the same protocol.
            assert_eq!(&Protocol::from_toml(&p.to_toml(), "again").unwrap(), p);
        }
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_allowed_ones() {
        let t = BUILTIN[0]
            .1
            .replace("coils = 8", "coils = 8\ncoil_count = 3");
        let e = Protocol::from_toml(&t, "x.toml").unwrap_err().to_string();
        assert!(
            e.contains("x.toml") && e.contains("coil_count") && e.contains("coils"),
            "{e}"
        );
        let t = BUILTIN[0]
            .1
            .replace("pattern = \"random\"", "pattern = \"radial\"");
        let e = Protocol::from_toml(&t, "x.toml").unwrap_err().to_string();
        assert!(e.contains("radial") && e.contains("equispaced"), "{e}");
    }

    #[test]
    fn wrong_types_missing_fields_and_ranges_are_errors() {
        let t = BUILTIN[0].1.replace("coils = 8", "coils = \"eight\"");
        let e = Protocol::from_toml(&t, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("coils"), "{e}");
        let t = BUILTIN[0].1.replace("acceleration = 4.0", "");
        let e = Protocol::from_toml(&t, "x.toml").unwrap_err().to_string();
        assert!(e.contains("acceleration"), "{e}");
        let t = BUILTIN[0]
            .1
            .replace("acceleration = 4.0", "acceleration = 0.5");
        let e = Protocol::from_toml(&t, "x.toml").unwrap_err().to_string();
        assert!(
            e.contains("acquisition.corruption.acceleration") && e.contains("[1, 64]"),
            "{e}"
        );
        let t = BUILTIN[0].1.replace("coils = 8", "coils = 0");
        assert!(Protocol::from_toml(&t, "x.toml").is_err());
    }

    #[test]
    fn every_acquisition_limit_is_rejected_with_its_key_path() {
        let preset = |n: &str| {
            BUILTIN
                .iter()
                .find(|(name, _)| *name == n)
                .map(|(_, t)| t.to_string())
                .unwrap()
        };
        let cart = preset("brain-r4-cartesian");
        let cases = [
            (cart.replace("coils = 8", "coils = 65"), "acquisition.coils"),
            (
                cart.replace("noise_level = 0.002", "noise_level = 1.5"),
                "acquisition.noise_level",
            ),
            (
                cart.replace("seed = 0", "seed = 0\ndelta = 1.5"),
                "acquisition.delta",
            ),
            (
                cart.replace("acceleration = 4.0", "acceleration = 65.0"),
                "acquisition.corruption.acceleration",
            ),
            (
                cart.replace("\"random\"", "\"equispaced\"")
                    .replace("acceleration = 4.0", "acceleration = 4.5"),
                "acquisition.corruption.acceleration",
            ),
            (
                cart.replace("center_fraction = 0.08", "center_fraction = 1.5"),
                "acquisition.corruption.center_fraction",
            ),
            (
                cart.replace("center_fraction = 0.08", "center_fraction = 0.08\naxis = 2"),
                "acquisition.corruption.axis",
            ),
            (
                preset("pixel-90").replace("p = 0.9", "p = 1.5"),
                "acquisition.corruption.p",
            ),
            (
                preset("box-corruption").replace("count = 1", "count = 0"),
                "acquisition.corruption.count",
            ),
            (
                preset("box-corruption").replace("size = [64, 64]", "size = [0, 64]"),
                "acquisition.corruption.size",
            ),
            (
                preset("box-corruption")
                    .replace("further_box_size = [32, 32]", "further_box_size = [32, 0]"),
                "acquisition.further_box_size",
            ),
            (
                preset("gaussian-cs").replace("ratio = 0.25", "ratio = 1.5"),
                "acquisition.corruption.m / ratio",
            ),
        ];
        for (text, key) in cases {
            let e = Protocol::from_toml(&text, "x.toml").unwrap_err();
            assert!(
                matches!(&e, ProtocolError::Invalid { key: k, .. } if k == key),
                "{key}: {e}"
            );
            assert!(
                e.to_string().starts_with(&format!("x.toml: {key} = ")),
                "{e}"
            );
        }
    }

    #[test]
    fn prior_methods_parse_and_their_keys_are_checked() {
        let base = BUILTIN[0].1.replace(
            "method = \"l1-wavelet\"\nlambda = 0.005\niterations = 100",
            "method = \"iterative\"\nmodel = \"runs/prior\"\nsteps = 30\nsamples = 8\nzeta = 0.5\nseed = 3",
        );
        let p = Protocol::from_toml(&base, "x.toml").unwrap();
        let r = p.reconstruction.as_ref().unwrap();
        assert_eq!(r.method, Method::Iterative);
        assert!(r.method.is_prior());
        assert_eq!(r.model.as_deref(), Some(Path::new("runs/prior")));
        assert_eq!(
            (r.steps, r.samples, r.zeta, r.seed),
            (Some(30), Some(8), Some(0.5), Some(3))
        );
        assert_eq!(Protocol::from_toml(&p.to_toml(), "again").unwrap(), p);
        let one = base.replace("\"iterative\"", "\"one-step\"") + "";
        let one = one.replace("seed = 3", "seed = 3\ndata_consistency = true");
        let p1 = Protocol::from_toml(&one, "x.toml").unwrap();
        assert_eq!(p1.reconstruction.unwrap().data_consistency, Some(true));
        for (from, to, key, allowed) in [
            ("zeta = 0.5", "zeta = 1.5", "reconstruction.zeta", "(0, 1]"),
            (
                "samples = 8",
                "samples = 0",
                "reconstruction.samples",
                "[1, 1000]",
            ),
            (
                "steps = 30",
                "steps = 0",
                "reconstruction.steps",
                "[1, 10000]",
            ),
        ] {
            let e = Protocol::from_toml(&base.replace(from, to), "x.toml")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("x.toml") && e.contains(key) && e.contains(allowed),
                "{e}"
            );
        }
        // prior keys on a classical method are refused, naming the key
        let e = Protocol::from_toml(&base.replace("\"iterative\"", "\"tv\""), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("reconstruction.model") && e.contains("one-step"),
            "{e}"
        );
        // unknown keys still name the allowed ones
        let e = Protocol::from_toml(&base.replace("zeta = 0.5", "zetta = 0.5"), "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("zetta") && e.contains("zeta"), "{e}");
        assert_eq!("one-step".parse::<Method>(), Ok(Method::OneStep));
        let e = "diffusion".parse::<Method>().unwrap_err();
        assert!(e.contains("iterative") && e.contains("zero-filled"), "{e}");
    }

    #[test]
    fn resolve_finds_presets_and_reports_unknown_names() {
        assert_eq!(Protocol::resolve("pixel-90").unwrap().name, "pixel-90");
        let e = Protocol::resolve("brain-r5").unwrap_err().to_string();
        assert!(e.contains("brain-r4-cartesian"), "{e}");
        let e = Protocol::resolve("/no/such/file.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/file.toml"), "{e}");
    }
}
