//! `amri info FILE`: a patient-free summary of what was read.

use std::fmt::Write as _;
use std::path::PathBuf;

use amri_core::{Affine, MeasuredDomain, Volume};
use amri_io::{Format, Scan};
use anyhow::Result;

/// Arguments of `amri info`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scan files or DICOM series folders.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `amri info`.
pub fn run(args: Args) -> Result<()> {
    let mut failed = 0;
    for p in &args.inputs {
        match describe(p, args.json) {
            Ok(s) => print!("{s}"),
            Err(e) => {
                eprintln!("error: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} inputs could not be read", args.inputs.len());
    }
    Ok(())
}

/// Text (or JSON) summary of every scan in `path`.
pub fn describe(path: &std::path::Path, json: bool) -> Result<String> {
    let fmt = Format::detect(path)?;
    let scans = amri_io::read_all(path)?;
    let mut out = String::new();
    if json {
        for s in &scans {
            if let Scan::KSpace(k) = s {
                super::log_mask_note(path, k);
            }
        }
        let items: Vec<serde_json::Value> = scans.iter().map(|s| scan_json(path, fmt, s)).collect();
        let v = if items.len() == 1 {
            items[0].clone()
        } else {
            serde_json::Value::Array(items)
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(out);
    }
    for (n, s) in scans.iter().enumerate() {
        if scans.len() > 1 {
            writeln!(
                out,
                "{} [series {} of {}]",
                path.display(),
                n + 1,
                scans.len()
            )?;
        } else {
            writeln!(out, "{}", path.display())?;
        }
        writeln!(out, "  format        {}", fmt.name())?;
        match s {
            Scan::Image(v) => volume_text(&mut out, "image (real)", v)?,
            Scan::ComplexImage(v) => volume_text(&mut out, "image (complex)", v)?,
            Scan::KSpace(k) => {
                let [sl, c, r, col] = k.shape4();
                let kind = match k.domain() {
                    MeasuredDomain::Image => "measured data: corrupted image (image-domain mask)",
                    MeasuredDomain::Projection => "measured data: random projections (Gaussian CS)",
                    MeasuredDomain::Kspace => "k-space",
                };
                writeln!(out, "  kind          {kind}")?;
                writeln!(out, "  dims          slices {sl}, coils {c}, rows {r}, cols {col}  [slice, coil, row, col]")?;
                writeln!(out, "  datatype      complex64")?;
                super::log_mask_note(path, k);
                let inferred = k.attributes.get("mask_source").map(String::as_str)
                    == Some(amri_io::format::MASK_INFERRED);
                match &k.mask {
                    Some(_) => writeln!(
                        out,
                        "  mask          {}, {:.1} % sampled (acceleration {:.2})",
                        if inferred {
                            "inferred from the non-zero samples"
                        } else {
                            "yes"
                        },
                        100.0 * k.sampled_fraction(),
                        1.0 / k.sampled_fraction().max(1e-12)
                    )?,
                    None => writeln!(out, "  mask          none (fully sampled)")?,
                }
                if let Some(n) = &k.noise {
                    writeln!(
                        out,
                        "  noise         {} samples x {} coils (noise readouts)",
                        n.nrows(),
                        n.ncols()
                    )?;
                }
                writeln!(
                    out,
                    "  reference     {}",
                    if k.reference.is_some() { "yes" } else { "no" }
                )?;
                writeln!(
                    out,
                    "  coil maps     {}",
                    if k.sensitivities.is_some() {
                        "yes"
                    } else {
                        "no"
                    }
                )?;
                affine_text(&mut out, &k.affine)?;
                for (key, v) in amri_io::attrs::with_typed(k).iter() {
                    if !is_identifying(key) {
                        writeln!(out, "  attr {key:<9} {v}")?;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Attribute keys never printed: they may identify the patient.
pub fn is_identifying(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("patient") || k.contains("birth") || k.contains("name")
}

fn volume_text<T>(out: &mut String, kind: &str, v: &Volume<T>) -> Result<()>
where
    T: Copy,
    Volume<T>: RangeOf,
{
    let [f, s, r, c] = v.shape4();
    writeln!(out, "  kind          {kind}")?;
    writeln!(
        out,
        "  dims          frames {f}, slices {s}, rows {r}, cols {c}  [frame, slice, row, col]"
    )?;
    writeln!(
        out,
        "  datatype      {} (stored), read as {}",
        or_unknown(&v.meta.source_datatype),
        std::any::type_name::<T>()
            .rsplit("::")
            .next()
            .unwrap_or("?")
    )?;
    let vs = v.voxel_size();
    writeln!(
        out,
        "  voxel size    {:.4} x {:.4} x {:.4} mm  (col, row, slice)",
        vs[0], vs[1], vs[2]
    )?;
    if let Some((lo, hi)) = v.range() {
        writeln!(out, "  value range   {lo} .. {hi}")?;
    }
    affine_text(out, &v.affine)?;
    if !v.meta.description.is_empty() {
        writeln!(out, "  description   {}", v.meta.description)?;
    }
    if let Some(se) = &v.meta.series {
        writeln!(out, "  modality      {}", or_unknown(&se.modality))?;
        writeln!(
            out,
            "  series        {}",
            or_unknown(&se.series_description)
        )?;
        writeln!(
            out,
            "  series uid    {}",
            or_unknown(&se.series_instance_uid)
        )?;
        writeln!(out, "  instances     {}", se.sop_instance_uids.len())?;
        writeln!(out, "  manufacturer  {}", or_unknown(&se.manufacturer))?;
        if let Some(b0) = se.field_strength_t {
            writeln!(out, "  field         {b0} T")?;
        }
        if let (Some(tr), Some(te)) = (se.repetition_time_ms, se.echo_time_ms) {
            writeln!(out, "  TR / TE       {tr} / {te} ms")?;
        }
        writeln!(out, "  transfer      {}", or_unknown(&se.transfer_syntax))?;
    }
    Ok(())
}

fn affine_text(out: &mut String, a: &Affine) -> Result<()> {
    writeln!(
        out,
        "  orientation   {}  (voxel axes col, row, slice point towards)",
        a.orientation_code()
    )?;
    writeln!(out, "  affine (RAS+, mm)")?;
    for row in &a.0 {
        writeln!(
            out,
            "    [{:>10.4} {:>10.4} {:>10.4} {:>10.4}]",
            row[0], row[1], row[2], row[3]
        )?;
    }
    Ok(())
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Value range of a volume's samples (magnitude for complex).
pub trait RangeOf {
    /// Smallest and largest finite sample.
    fn range(&self) -> Option<(f32, f32)>;
}

impl RangeOf for Volume<f32> {
    fn range(&self) -> Option<(f32, f32)> {
        self.finite_range()
    }
}

impl RangeOf for Volume<amri_core::C32> {
    fn range(&self) -> Option<(f32, f32)> {
        amri_core::finite_range(self.data.iter().map(|c| c.norm()))
    }
}

fn scan_json(path: &std::path::Path, fmt: Format, s: &Scan) -> serde_json::Value {
    use serde_json::json;
    let mut v = match s {
        Scan::Image(v) => vol_json("image", v),
        Scan::ComplexImage(v) => vol_json("complex_image", v),
        Scan::KSpace(k) => json!({
            "kind": "kspace",
            "shape": k.shape4(),
            "axes": ["slice", "coil", "row", "col"],
            "sampled_fraction": k.sampled_fraction(),
            "has_mask": k.mask.is_some(),
            "has_reference": k.reference.is_some(),
            "has_sensitivities": k.sensitivities.is_some(),
            "noise_samples": k.noise.as_ref().map(|n| n.nrows()),
            "affine": k.affine.0,
            "attributes": amri_io::attrs::with_typed(k).iter().filter(|(key, _)| !is_identifying(key)).collect::<std::collections::BTreeMap<_, _>>(),
        }),
    };
    v["path"] = json!(path.display().to_string());
    v["format"] = json!(fmt.name());
    v
}

fn vol_json<T>(kind: &str, v: &Volume<T>) -> serde_json::Value {
    use serde_json::json;
    let mut o = json!({
        "kind": kind,
        "shape": v.shape4(),
        "axes": ["frame", "slice", "row", "col"],
        "datatype": v.meta.source_datatype,
        "voxel_size_mm": v.voxel_size(),
        "orientation": v.affine.orientation_code(),
        "affine": v.affine.0,
        "description": v.meta.description,
    });
    if let Some(s) = &v.meta.series {
        o["series"] = json!({
            "modality": s.modality,
            "series_description": s.series_description,
            "series_instance_uid": s.series_instance_uid,
            "instances": s.sop_instance_uids.len(),
            "manufacturer": s.manufacturer,
            "transfer_syntax": s.transfer_syntax,
        });
    }
    o
}
