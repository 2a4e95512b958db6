//! The ISMRMRD XML header (`/dataset/xml`): the fields amri uses, parsed with `roxmltree`, and
//! the minimal schema-valid header the writer emits.

use std::fmt::Write as _;

/// Largest XML header accepted, in bytes (real headers are tens of kB).
pub const MAX_XML_BYTES: usize = 16 << 20;

/// Largest matrix size accepted along one axis.
pub const MAX_MATRIX: u64 = 1 << 16;

/// Size `(x, y, z)` of a matrix and its field of view in mm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Space {
    /// Matrix size `[x (readout), y (phase encode 1), z (phase encode 2 / slice)]`.
    pub matrix: [usize; 3],
    /// Field of view `[x, y, z]` in mm.
    pub fov_mm: [f64; 3],
}

/// Minimum, maximum and centre of one encoding counter, from `encodingLimits`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limit {
    /// Smallest value.
    pub minimum: u64,
    /// Largest value.
    pub maximum: u64,
    /// Value at the centre of k-space.
    pub center: u64,
}

/// What amri reads from the XML header of the first `encoding`.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// The encoded space: the k-space grid the acquisitions sample (with readout oversampling).
    pub encoded: Space,
    /// The reconstruction space: the image grid wanted (readout oversampling removed).
    pub recon: Space,
    /// `encodingLimits/kspace_encoding_step_1`, when given.
    pub ky: Option<Limit>,
    /// `trajectory` text (`cartesian`, `radial`, `spiral`, `epi`, `other`...).
    pub trajectory: String,
    /// Number of `encoding` elements in the header.
    pub encodings: usize,
    /// `parallelImaging/accelerationFactor` `(step 1, step 2)`, when given.
    pub acceleration: Option<(u64, u64)>,
    /// `parallelImaging/calibrationMode`, when given.
    pub calibration_mode: Option<String>,
    /// Patient-free descriptive fields, as `(attribute key, text)` for [`crate::Scan`] attributes.
    pub info: Vec<(String, String)>,
    /// `userParameters/userParameterString` entries `(name, value)`.
    pub user: Vec<(String, String)>,
}

/// First child element of `n` whose local name is `name`.
fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// Trimmed text of the element at `path` below `n`.
fn text<'a>(n: roxmltree::Node<'a, '_>, path: &[&str]) -> Option<&'a str> {
    let mut cur = n;
    for p in path {
        cur = child(cur, p)?;
    }
    cur.text().map(str::trim)
}

fn num(n: roxmltree::Node<'_, '_>, path: &[&str]) -> Result<Option<f64>, String> {
    match text(n, path) {
        None => Ok(None),
        Some(t) => t
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| format!("XML header: {} is '{t}', not a number", path.join("/"))),
    }
}

fn uint(n: roxmltree::Node<'_, '_>, path: &[&str]) -> Result<Option<u64>, String> {
    match text(n, path) {
        None => Ok(None),
        Some(t) => t.parse::<u64>().map(Some).map_err(|_| {
            format!(
                "XML header: {} is '{t}', not a non-negative integer",
                path.join("/")
            )
        }),
    }
}

fn space(enc: roxmltree::Node<'_, '_>, name: &str) -> Result<Space, String> {
    let s = child(enc, name).ok_or_else(|| format!("XML header: encoding has no {name}"))?;
    let mut matrix = [0usize; 3];
    let mut fov_mm = [0f64; 3];
    for (a, ax) in ["x", "y", "z"].iter().enumerate() {
        let m = uint(s, &["matrixSize", ax])?
            .ok_or_else(|| format!("XML header: {name}/matrixSize/{ax} is missing"))?;
        if m == 0 || m > MAX_MATRIX {
            return Err(format!(
                "XML header: {name}/matrixSize/{ax} = {m} is outside 1..={MAX_MATRIX}"
            ));
        }
        matrix[a] = m as usize;
        let f = num(s, &["fieldOfView_mm", ax])?.unwrap_or(0.0);
        if f < 0.0 {
            return Err(format!(
                "XML header: {name}/fieldOfView_mm/{ax} = {f} is negative"
            ));
        }
        fov_mm[a] = f;
    }
    Ok(Space { matrix, fov_mm })
}

/// Parses the header text; the error says which element is wrong.
pub fn parse(xml: &str) -> Result<Header, String> {
    if xml.len() > MAX_XML_BYTES {
        return Err(format!(
            "XML header is {} bytes, more than the {MAX_XML_BYTES} accepted",
            xml.len()
        ));
    }
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("XML header: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "ismrmrdHeader" {
        return Err(format!(
            "XML header: root element is <{}>, not <ismrmrdHeader>",
            root.tag_name().name()
        ));
    }
    let encodings: Vec<_> = root
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "encoding")
        .collect();
    let enc = *encodings
        .first()
        .ok_or("XML header: no <encoding> element")?;
    let encoded = space(enc, "encodedSpace")?;
    let recon = space(enc, "reconSpace")?;
    let ky = match child(enc, "encodingLimits").and_then(|l| child(l, "kspace_encoding_step_1")) {
        None => None,
        Some(l) => Some(Limit {
            minimum: uint(l, &["minimum"])?.unwrap_or(0),
            maximum: uint(l, &["maximum"])?.unwrap_or(0),
            center: uint(l, &["center"])?.unwrap_or(0),
        }),
    };
    let trajectory = text(enc, &["trajectory"])
        .ok_or("XML header: encoding has no <trajectory>")?
        .to_string();
    let acceleration = match (
        uint(
            enc,
            &[
                "parallelImaging",
                "accelerationFactor",
                "kspace_encoding_step_1",
            ],
        )?,
        uint(
            enc,
            &[
                "parallelImaging",
                "accelerationFactor",
                "kspace_encoding_step_2",
            ],
        )?,
    ) {
        (None, None) => None,
        (a, b) => Some((a.unwrap_or(1), b.unwrap_or(1))),
    };
    let calibration_mode = text(enc, &["parallelImaging", "calibrationMode"]).map(str::to_string);
    // Patient-free fields shown by `amri info` (subjectInformation and studyInformation are
    // never read).
    let mut info = Vec::new();
    for (key, path) in [
        ("ismrmrd_version", &["version"][..]),
        (
            "ismrmrd_system_vendor",
            &["acquisitionSystemInformation", "systemVendor"][..],
        ),
        (
            "ismrmrd_system_model",
            &["acquisitionSystemInformation", "systemModel"][..],
        ),
        (
            "ismrmrd_field_strength_t",
            &["acquisitionSystemInformation", "systemFieldStrength_T"][..],
        ),
        (
            "ismrmrd_receiver_channels",
            &["acquisitionSystemInformation", "receiverChannels"][..],
        ),
        (
            "ismrmrd_h1_frequency_hz",
            &["experimentalConditions", "H1resonanceFrequency_Hz"][..],
        ),
        (
            "ismrmrd_protocol",
            &["measurementInformation", "protocolName"][..],
        ),
        ("ismrmrd_tr_ms", &["sequenceParameters", "TR"][..]),
        ("ismrmrd_te_ms", &["sequenceParameters", "TE"][..]),
        (
            "ismrmrd_flip_angle_deg",
            &["sequenceParameters", "flipAngle_deg"][..],
        ),
    ] {
        if let Some(t) = text(root, path).filter(|t| !t.is_empty()) {
            info.push((key.to_string(), t.chars().take(200).collect()));
        }
    }
    let user = child(root, "userParameters")
        .map(|u| {
            u.children()
                .filter(|c| c.is_element() && c.tag_name().name() == "userParameterString")
                .filter_map(|c| {
                    Some((
                        text(c, &["name"])?.to_string(),
                        text(c, &["value"]).unwrap_or("").to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Header {
        user,
        encoded,
        recon,
        ky,
        trajectory,
        encodings: encodings.len(),
        acceleration,
        calibration_mode,
        info,
    })
}

/// What the writer puts in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteHeader {
    /// Matrix and field of view of the k-space grid (encoded = recon: nothing is oversampled).
    pub space: Space,
    /// Number of receiver channels.
    pub coils: usize,
    /// Number of slices (the `slice` counter runs from 0 to `slices - 1`).
    pub slices: usize,
    /// Largest `kspace_encode_step_1` (= columns - 1) and its centre (= columns / 2).
    pub ky: Limit,
    /// H1 resonance frequency in Hz (required by the schema).
    pub h1_hz: u64,
    /// Acceleration factor along phase encode 1 to record, if the data are undersampled.
    pub acceleration: Option<u64>,
    /// `userParameters/userParameterString` entries `(name, value)`.
    pub user: Vec<(String, String)>,
}

/// Text with XML's five special characters escaped.
fn escape(t: &str) -> String {
    let mut o = String::with_capacity(t.len());
    for ch in t.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

/// The XML header text for `h` (schema version 2 elements, namespace `http://www.ismrm.org/ISMRMRD`).
pub fn to_xml(h: &WriteHeader) -> String {
    let mut s = String::new();
    let sp = |s: &mut String, name: &str, sp: &Space| {
        let _ = write!(
            s,
            "    <{name}>\n      <matrixSize>\n        <x>{}</x>\n        <y>{}</y>\n        <z>{}</z>\n      </matrixSize>\n      <fieldOfView_mm>\n        <x>{}</x>\n        <y>{}</y>\n        <z>{}</z>\n      </fieldOfView_mm>\n    </{name}>\n",
            sp.matrix[0], sp.matrix[1], sp.matrix[2], sp.fov_mm[0], sp.fov_mm[1], sp.fov_mm[2]
        );
    };
    s.push_str("<?xml version=\"1.0\"?>\n<ismrmrdHeader xmlns=\"http://www.ismrm.org/ISMRMRD\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" xsi:schemaLocation=\"http://www.ismrm.org/ISMRMRD ismrmrd.xsd\">\n");
    let _ = write!(
        s,
        "  <acquisitionSystemInformation>\n    <receiverChannels>{}</receiverChannels>\n  </acquisitionSystemInformation>\n",
        h.coils
    );
    let _ = write!(
        s,
        "  <experimentalConditions>\n    <H1resonanceFrequency_Hz>{}</H1resonanceFrequency_Hz>\n  </experimentalConditions>\n",
        h.h1_hz
    );
    s.push_str("  <encoding>\n");
    sp(&mut s, "encodedSpace", &h.space);
    sp(&mut s, "reconSpace", &h.space);
    let _ = write!(
        s,
        "    <encodingLimits>\n      <kspace_encoding_step_1>\n        <minimum>{}</minimum>\n        <maximum>{}</maximum>\n        <center>{}</center>\n      </kspace_encoding_step_1>\n      <slice>\n        <minimum>0</minimum>\n        <maximum>{}</maximum>\n        <center>0</center>\n      </slice>\n    </encodingLimits>\n",
        h.ky.minimum,
        h.ky.maximum,
        h.ky.center,
        h.slices.saturating_sub(1)
    );
    s.push_str("    <trajectory>cartesian</trajectory>\n");
    if let Some(r) = h.acceleration {
        let _ = write!(
            s,
            "    <parallelImaging>\n      <accelerationFactor>\n        <kspace_encoding_step_1>{r}</kspace_encoding_step_1>\n        <kspace_encoding_step_2>1</kspace_encoding_step_2>\n      </accelerationFactor>\n    </parallelImaging>\n"
        );
    }
    s.push_str("  </encoding>\n");
    if !h.user.is_empty() {
        s.push_str("  <userParameters>\n");
        for (name, value) in &h.user {
            let _ = write!(
                s,
                "    <userParameterString>\n      <name>{}</name>\n      <value>{}</value>\n    </userParameterString>\n",
                escape(name),
                escape(value)
            );
        }
        s.push_str("  </userParameters>\n");
    }
    s.push_str("</ismrmrdHeader>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_header_parses_back() {
        let w = WriteHeader {
            space: Space {
                matrix: [64, 48, 1],
                fov_mm: [256.0, 192.0, 5.0],
            },
            coils: 4,
            slices: 3,
            ky: Limit {
                minimum: 0,
                maximum: 47,
                center: 24,
            },
            h1_hz: 63_500_000,
            acceleration: Some(4),
            user: vec![("amri.note".into(), "a < b & \"c\"".into())],
        };
        let h = parse(&to_xml(&w)).expect("parses");
        assert_eq!(h.user, w.user);
        assert_eq!(h.encoded, w.space);
        assert_eq!(h.recon, w.space);
        assert_eq!(h.ky, Some(w.ky));
        assert_eq!(h.trajectory, "cartesian");
        assert_eq!(h.acceleration, Some((4, 1)));
    }

    #[test]
    fn bad_headers_say_what_is_wrong() {
        for (xml, want) in [
            ("<a/>", "not <ismrmrdHeader>"),
            ("<ismrmrdHeader>", "XML header"),
            ("<ismrmrdHeader/>", "no <encoding>"),
            (
                "<ismrmrdHeader><encoding><encodedSpace><matrixSize><x>99999999</x><y>1</y><z>1</z></matrixSize></encodedSpace></encoding></ismrmrdHeader>",
                "outside",
            ),
            (
                "<ismrmrdHeader><encoding><encodedSpace><matrixSize><x>-3</x><y>1</y><z>1</z></matrixSize></encodedSpace></encoding></ismrmrdHeader>",
                "not a non-negative integer",
            ),
        ] {
            let e = parse(xml).unwrap_err();
            assert!(e.contains(want), "{xml}: {e}");
        }
    }
}
