//! The side panel's settings: the protocol applied, the acquisition and the methods with
//! their parameters.

use super::*;

/// The protocol applied when the viewer starts.
pub const DEFAULT_PROTOCOL: &str = "brain-r4-cartesian";

/// One method row of the reconstruction panel.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodChoice {
    /// The method.
    pub method: ReconMethod,
    /// Run it on "Reconstruct".
    pub enabled: bool,
    /// Its parameters.
    pub params: MethodParams,
}

/// Acquisition and reconstruction settings edited in the side panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Name of the protocol last applied.
    pub protocol: String,
    /// Acquisition used to simulate measured data from an image.
    pub acquisition: Acquisition,
    /// Methods, in panel order.
    pub methods: Vec<MethodChoice>,
    /// Reconstruct only the current slice (fast) instead of the volume.
    pub only_slice: bool,
    /// Reconstruct as soon as a scan is opened.
    pub auto_reconstruct: bool,
    /// Learned prior for one-step / iterative: a checkpoint or training-run folder.
    pub model: String,
}

impl Settings {
    /// Settings of a built-in protocol (or `DEFAULT_PROTOCOL` values if it cannot be read):
    /// its acquisition, zero-filled plus its reconstruction method enabled.
    pub fn from_protocol(p: &Protocol) -> Settings {
        let mut methods: Vec<MethodChoice> = ReconMethod::all()
            .into_iter()
            .map(|m| MethodChoice {
                method: m,
                enabled: m == ReconMethod::Classical(Method::ZeroFilled),
                params: MethodParams::default_for(m),
            })
            .collect();
        // The protocol's method, with its values over the plan's defaults.
        if let Ok(plan) = amri_pipeline::Plan::new(Some(p), &Default::default()) {
            if let Some(c) = methods
                .iter_mut()
                .find(|c| c.method == ReconMethod::Classical(plan.method()))
            {
                c.enabled = true;
                c.params = MethodParams::of_plan(&plan);
            }
        }
        let model = p
            .reconstruction
            .as_ref()
            .and_then(|r| r.model.as_ref())
            .map(|m| m.display().to_string())
            .unwrap_or_default();
        Settings {
            protocol: p.name.clone(),
            acquisition: p.acquisition.clone(),
            methods,
            only_slice: false,
            auto_reconstruct: true,
            model,
        }
    }

    /// Applies protocol `name` (a built-in name or a `.toml` path), keeping `only_slice`,
    /// `auto_reconstruct` and a model chosen before (unless the protocol names one).
    pub fn apply_protocol(&mut self, name: &str) -> crate::Result<()> {
        let p = Protocol::resolve(name)?;
        let keep = (self.only_slice, self.auto_reconstruct, self.model.clone());
        *self = Settings::from_protocol(&p);
        (self.only_slice, self.auto_reconstruct) = (keep.0, keep.1);
        if self.model.is_empty() {
            self.model = keep.2;
        }
        Ok(())
    }

    /// The acceleration of a k-space acquisition, `None` for other corruptions.
    pub fn acceleration(&self) -> Option<f64> {
        match &self.acquisition.corruption {
            CorruptionSpec::Kspace { acceleration, .. } => Some(*acceleration),
            _ => None,
        }
    }

    /// Sets the acceleration of a k-space acquisition (ignored for other corruptions).
    pub fn set_acceleration(&mut self, r: f64) {
        if let CorruptionSpec::Kspace { acceleration, .. } = &mut self.acquisition.corruption {
            *acceleration = r;
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        match Protocol::resolve(DEFAULT_PROTOCOL) {
            Ok(p) => Settings::from_protocol(&p),
            Err(_) => Settings {
                protocol: String::new(),
                acquisition: Acquisition {
                    corruption: CorruptionSpec::Kspace {
                        pattern: KspacePattern::Random,
                        acceleration: 4.0,
                        center_fraction: 0.08,
                        axis: 1,
                    },
                    delta: 0.1,
                    further: Default::default(),
                    further_box_size: None,
                    coils: 1,
                    synthetic_phase: true,
                    noise_level: 0.0,
                    seed: 0,
                    store_maps: false,
                },
                methods: ReconMethod::all()
                    .into_iter()
                    .map(|m| MethodChoice {
                        method: m,
                        enabled: !m.is_prior(),
                        params: MethodParams::default_for(m),
                    })
                    .collect(),
                only_slice: false,
                auto_reconstruct: true,
                model: String::new(),
            },
        }
    }
}
