//! End-to-end tests of `amri train` / `amri finetune` on a tiny synthetic NIfTI volume.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use amri_core::{Affine, Volume};
use amri_io::{Scan, WriteOptions};
use assert_cmd::Command;
use ndarray::Array4;
use predicates::prelude::*;

fn amri() -> Command {
    Command::cargo_bin("amri").unwrap()
}

/// A 4-slice 32×32 phantom volume (ellipses of varying intensity) written as NIfTI.
fn volume(dir: &Path) -> PathBuf {
    let data = Array4::from_shape_fn((1, 4, 32, 32), |(_, s, i, j)| {
        let (y, x) = (i as f32 / 16.0 - 1.0, j as f32 / 16.0 - 1.0);
        let outer = (x * x / 0.8 + y * y / 0.6 < 1.0) as u8 as f32;
        let inner = ((x - 0.2 * s as f32 / 4.0).powi(2) + y * y < 0.1) as u8 as f32;
        200.0 * outer + 150.0 * inner
    });
    let p = dir.join("vol.nii.gz");
    amri_io::write(
        &p,
        &Scan::Image(Volume::new(data, Affine::default())),
        &WriteOptions::default(),
    )
    .unwrap();
    p
}

fn log_rows(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("step,loss,lr,grad_norm,seconds"));
    lines.map(str::to_owned).collect()
}

fn card(out: &Path) -> serde_json::Value {
    let latest = std::fs::read_to_string(out.join("latest")).unwrap();
    let text = std::fs::read_to_string(out.join(latest.trim()).join("model.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn train(out: &Path, vol: &Path, steps: usize) -> Command {
    small_run(
        "tiny",
        vol,
        out,
        &steps.to_string(),
        &["--seed", "5", "--checkpoint-every", "2", "--warmup", "2"],
    )
}

#[test]
fn train_resume_finetune_and_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = volume(tmp.path());
    let out = tmp.path().join("run");

    train(&out, &vol, 3).assert().success();
    assert_eq!(
        std::fs::read_to_string(out.join("latest")).unwrap().trim(),
        "ckpt-00000003"
    );
    assert!(out.join("loss.png").is_file());
    let rows = log_rows(&out);
    let steps: Vec<&str> = rows.iter().map(|r| r.split(',').next().unwrap()).collect();
    assert_eq!(steps, ["0", "1", "2"]);
    let c = card(&out);
    assert_eq!(c["steps"], 3);
    assert_eq!(c["seed"], 5);
    assert_eq!(c["preset"], "tiny");
    assert_eq!(c["objective"], "ambient_kspace");
    assert_eq!(c["corruption"]["protocol"], "singlecoil-r4-cartesian");
    assert_eq!(c["corruption"]["slices"], 4);

    // the run exists: a second plain `train` refuses to overwrite it
    train(&out, &vol, 3)
        .assert()
        .failure()
        .stderr(predicate::str::contains("--resume"));

    // resume continues the step count and the loss log
    train(&out, &vol, 5).arg("--resume").assert().success();
    assert_eq!(card(&out)["steps"], 5);
    let rows2 = log_rows(&out);
    assert_eq!(rows2.len(), 5);
    assert_eq!(rows2[..3], rows[..]);
    assert!(rows2[4].starts_with("4,"));
    // only the newest checkpoint and the previous one are kept
    assert!(out.join("ckpt-00000005").is_dir() && out.join("ckpt-00000004").is_dir());
    assert!(!out.join("ckpt-00000002").exists());

    // fine-tuning from the run, encoder frozen, lower default learning rate
    let ft = tmp.path().join("ft");
    amri()
        .args(["finetune", "--base"])
        .arg(&out)
        .args([
            "--protocol",
            "singlecoil-r4-cartesian",
            "--steps",
            "1",
            "--batch",
            "2",
        ])
        .args(["--freeze-down", "--no-progress", "--out"])
        .arg(&ft)
        .arg(&vol)
        .assert()
        .success();
    let f = card(&ft);
    assert_eq!(f["steps"], 1);
    assert_eq!(f["train"]["lr"], 1e-4);
    assert_eq!(f["train"]["freeze"], serde_json::json!(["conv_in", "enc."]));
    assert_eq!(f["denoiser"], c["denoiser"]);

    // a base whose card is not an amri-diffusion/1 card
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let mut bc = c.clone();
    bc["format"] = "something-else/3".into();
    std::fs::write(bad.join("model.json"), serde_json::to_vec(&bc).unwrap()).unwrap();
    amri()
        .args(["finetune", "--base"])
        .arg(&bad)
        .args([
            "--protocol",
            "singlecoil-r4-cartesian",
            "--steps",
            "1",
            "--out",
        ])
        .arg(tmp.path().join("ft2"))
        .arg(&vol)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not amri-diffusion/1"));
}

#[test]
fn bad_inputs_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = volume(tmp.path());
    let out = tmp.path().join("run");
    train(&out, &tmp.path().join("missing.nii.gz"), 2)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("missing.nii.gz")
                .and(predicate::str::contains("does not exist")),
        );
    train(&out, &vol, 2)
        .arg("--resume")
        .assert()
        .failure()
        .stderr(predicate::str::contains("holds no checkpoint"));
    amri()
        .args([
            "train",
            "--protocol",
            "gaussian-cs",
            "--steps",
            "1",
            "--out",
        ])
        .arg(&out)
        .arg(&vol)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not supported for training yet"));
    amri()
        .args(["finetune", "--base"])
        .arg(tmp.path().join("nowhere"))
        .args(["--protocol", "pixel-90", "--steps", "1", "--out"])
        .arg(&out)
        .arg(&vol)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("nowhere").and(predicate::str::contains("not a checkpoint")),
        );
}

#[test]
fn resume_ignores_changed_optimiser_flags_with_a_warning_and_refuses_a_changed_data_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = volume(tmp.path());
    let out = tmp.path().join("run");
    let base = |steps: usize| {
        let mut c = amri();
        c.args(["train", "--protocol", "pixel-90", "--steps"])
            .arg(steps.to_string())
            .args(["--no-progress", "--out"])
            .arg(&out)
            .arg(&vol);
        c
    };
    base(1)
        .args([
            "--batch", "2", "--lr", "0.002", "--seed", "3", "--ema", "0.9",
        ])
        .assert()
        .success();
    // same values given again, or none: no warning
    base(2)
        .arg("--resume")
        .args(["--lr", "0.002", "--seed", "3"])
        .assert()
        .success()
        .stderr(predicate::str::contains("ignored").not());
    // changed optimiser flags: each named in a warning, the run's values kept
    base(3)
        .arg("--resume")
        .args([
            "--lr", "0.01", "--ema", "0.5", "--warmup", "7", "--seed", "4",
        ])
        .args(["--preset", "base"])
        .assert()
        .success()
        .stderr(
            predicate::str::contains("--lr 0.01 ignored")
                .and(predicate::str::contains("--ema 0.5 ignored"))
                .and(predicate::str::contains("--warmup 7 ignored"))
                .and(predicate::str::contains("--seed 4 ignored"))
                .and(predicate::str::contains("--preset base ignored")),
        );
    let c = card(&out);
    assert_eq!(c["steps"], 3);
    assert_eq!(c["train"]["lr"], 0.002);
    assert_eq!(c["train"]["ema_decay"], 0.9);
    assert_eq!(c["train"]["seed"], 3);
    assert_eq!(c["preset"], "tiny");
    assert_eq!(c["corruption"]["batch"], 2);
    // a changed batch size or objective would change the data stream: refused, nothing written
    for (flag, value) in [("--batch", "3"), ("--objective", "supervised")] {
        base(4)
            .arg("--resume")
            .args([flag, value])
            .assert()
            .failure()
            .stderr(predicate::str::contains(flag).and(predicate::str::contains("not")));
        assert_eq!(card(&out)["steps"], 3);
    }
}

#[test]
fn tweedie_objective_trains_on_noisy_protocols_only() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = volume(tmp.path());
    let out = tmp.path().join("tw");
    amri()
        .args([
            "train",
            "--protocol",
            "singlecoil-r4-cartesian",
            "--objective",
            "tweedie",
        ])
        .args(["--steps", "1", "--batch", "2", "--no-progress", "--out"])
        .arg(&out)
        .arg(&vol)
        .assert()
        .success();
    let c = card(&out);
    assert_eq!(c["corruption"]["objective"], "tweedie");
    assert_eq!(c["objective"], "ambient_kspace");
    assert_eq!(
        c["corruption"]["acquisition"]["noise_level"],
        0.002f32 as f64
    );
    // pixel-90 has noise_level = 0: nothing to train a noisy-data model on
    amri()
        .args(["train", "--protocol", "pixel-90", "--objective", "tweedie"])
        .args(["--steps", "1", "--no-progress", "--out"])
        .arg(tmp.path().join("tw2"))
        .arg(&vol)
        .assert()
        .failure()
        .stderr(predicate::str::contains("noise_level > 0"));
}

/// SplitMix64: the seeded kill checkpoints of the SIGKILL test.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The raw, EMA and optimiser tensors of a run's latest checkpoint, as bit patterns by name.
fn final_state(run: &Path) -> Vec<(String, Vec<u32>)> {
    let dir = run.join(std::fs::read_to_string(run.join("latest")).unwrap().trim());
    let mut out = Vec::new();
    for f in ["model.safetensors", "ema.safetensors", "optim.safetensors"] {
        let ts = candle_core::safetensors::load(dir.join(f), &candle_core::Device::Cpu).unwrap();
        let mut names: Vec<&String> = ts.keys().collect();
        names.sort();
        for n in names {
            let bits = ts[n]
                .to_dtype(candle_core::DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
                .into_iter()
                .map(|v| (v as f32).to_bits())
                .collect();
            out.push((format!("{f}:{n}"), bits));
        }
    }
    out
}

/// `step,loss,lr,grad_norm` of every loss.csv row (the wall-clock column differs by design).
fn loss_rows(run: &Path) -> Vec<String> {
    log_rows(run)
        .iter()
        .map(|r| r.rsplit_once(',').unwrap().0.to_owned())
        .collect()
}

#[test]
fn sigkill_at_random_points_then_resume_gives_the_uninterrupted_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = volume(tmp.path());
    let steps = 10;
    let cmd = |out: &Path, resume: bool| {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("amri"));
        c.args(["train", "--protocol", "pixel-90", "--preset", "tiny"])
            .args([
                "--steps",
                &steps.to_string(),
                "--batch",
                "2",
                "--seed",
                "11",
            ])
            .args(["--checkpoint-every", "1", "--warmup", "3", "--ema", "0.9"])
            .args(["--no-progress", "--out"])
            .arg(out)
            .arg(&vol)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if resume {
            c.arg("--resume");
        }
        c
    };
    // the uninterrupted reference
    let reference = tmp.path().join("reference");
    assert!(cmd(&reference, false).status().unwrap().success());

    // The same run killed with SIGKILL three times, each time as soon as it has written a
    // seeded checkpoint k, one or two steps past where it started (watched through `latest`),
    // then resumed. Three kills end by step 8 of 10, so each lands while the run is still
    // training, whatever the machine's speed.
    let run = tmp.path().join("killed");
    let mut rng = 2024u64;
    let mut kills = 0;
    let mut resumed_from = Vec::new();
    let mut done = 0u64;
    for _ in 0..3 {
        let resume = run.join("latest").is_file();
        if resume {
            done = card(&run)["steps"].as_u64().unwrap();
            resumed_from.push(done);
        }
        let k = done + 1 + splitmix(&mut rng) % 2;
        assert!(k < steps as u64, "checkpoint {k} leaves no step to kill");
        let target = format!("ckpt-{k:08}");
        let mut child = cmd(&run, resume).spawn().unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let latest = std::fs::read_to_string(run.join("latest")).unwrap_or_default();
            if latest.trim() >= target.as_str() {
                child.kill().unwrap(); // SIGKILL on Unix
                kills += 1;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.wait().unwrap();
    }
    let resume = run.join("latest").is_file();
    if resume {
        resumed_from.push(card(&run)["steps"].as_u64().unwrap());
    }
    assert!(cmd(&run, resume).status().unwrap().success());
    eprintln!("{kills} kills; resumed from steps {resumed_from:?}");
    assert_eq!(
        kills, 3,
        "a run finished before its kill: the test did not test"
    );
    assert!(
        resumed_from.iter().any(|s| *s > 0 && *s < steps as u64),
        "no resume from a mid-run checkpoint: {resumed_from:?}"
    );

    assert_eq!(card(&run)["steps"], steps);
    let (a, b) = (final_state(&reference), final_state(&run));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(va == vb, "{na} differs after kill + resume");
    }
    assert_eq!(loss_rows(&reference), loss_rows(&run));
    // no temporary files left in the final checkpoint
    let dir = run.join(std::fs::read_to_string(run.join("latest")).unwrap().trim());
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp"), "stray {name}");
    }
}

#[test]
fn multicoil_protocols_train_with_acs_coil_maps() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = volume(tmp.path());
    let out = tmp.path().join("mc");
    // 8 coils, random Cartesian R=4 with 8 % centre lines (3 of 32): maps from those lines
    amri()
        .args([
            "train",
            "--protocol",
            "brain-r4-cartesian",
            "--steps",
            "2",
            "--batch",
            "2",
        ])
        .args(["--no-progress", "--out"])
        .arg(&out)
        .arg(&vol)
        .assert()
        .success();
    let c = card(&out);
    assert_eq!(c["steps"], 2);
    assert_eq!(c["objective"], "ambient_kspace");
    assert_eq!(c["corruption"]["acquisition"]["coils"], 8);
    let rows = log_rows(&out);
    assert_eq!(rows.len(), 2);
    let loss: f64 = rows[1].split(',').nth(1).unwrap().parse().unwrap();
    assert!(loss.is_finite() && loss > 0.0);
    // the simulation route caches its ACS coil maps in the run folder as the measured route
    // does: one file per slice, read back on resume, and the resumed run trains the same bits
    let slices = std::fs::read_dir(out.join("espirit-cache"))
        .unwrap()
        .count();
    assert!(slices >= 2, "{slices} cache files");
    let resume = |out: &Path, steps: &str| {
        let mut c = amri();
        c.args([
            "train",
            "--protocol",
            "brain-r4-cartesian",
            "--steps",
            steps,
        ])
        .args(["--batch", "2", "--no-progress", "--out"])
        .arg(out)
        .arg(&vol);
        c
    };
    resume(&out, "3")
        .arg("--resume")
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "coil maps: {slices} read from"
        )));
    let straight = tmp.path().join("straight");
    resume(&straight, "3")
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "0 read from {}",
            straight.join("espirit-cache").display()
        )));
    assert_eq!(weights(&out), weights(&straight));
    // the clean-trained twin of the same multi-coil run: the same inputs and first draws, the
    // loss on all of every coil's k-space, so its first loss exceeds the ambient run's (which
    // covers only what A measured) with the same initial weights
    let twin = tmp.path().join("twin");
    resume(&twin, "2")
        .args(["--objective", "clean"])
        .assert()
        .success();
    let c = card(&twin);
    assert_eq!(c["objective"], "ambient_kspace");
    assert_eq!(c["corruption"]["acquisition"]["coils"], 8);
    let first =
        |dir: &Path| -> f64 { log_rows(dir)[0].split(',').nth(1).unwrap().parse().unwrap() };
    let (amb, cln) = (first(&straight), first(&twin));
    assert!(
        cln.is_finite() && cln > amb,
        "clean twin {cln} vs ambient {amb}"
    );
}

#[test]
fn max_minutes_stops_with_a_checkpoint_that_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = volume(tmp.path());
    let out = tmp.path().join("run");
    // a limit every step exceeds: the run stops after its first step, checkpointed
    train(&out, &vol, 50)
        .args(["--max-minutes", "1e-6"])
        .assert()
        .success()
        .stderr(predicate::str::contains("stopped at step 1 of 50"));
    assert_eq!(
        std::fs::read_to_string(out.join("latest")).unwrap().trim(),
        "ckpt-00000001"
    );
    assert_eq!(card(&out)["steps"], 1);
    assert_eq!(log_rows(&out).len(), 1);
    // --resume without the limit continues to --steps
    train(&out, &vol, 3).arg("--resume").assert().success();
    assert_eq!(card(&out)["steps"], 3);
    assert_eq!(log_rows(&out).len(), 3);
    for bad in ["0", "--max-minutes=-1", "nan"] {
        let flag = if bad.starts_with("--") {
            vec![bad]
        } else {
            vec!["--max-minutes", bad]
        };
        train(&tmp.path().join("bad"), &vol, 3)
            .args(flag)
            .assert()
            .failure()
            .stderr(predicate::str::contains("--max-minutes"));
    }
}

#[test]
fn consistency_flag_is_recorded_and_needs_the_tweedie_objective() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = volume(tmp.path());
    // strong noise (σ_n = 0.3 of the data scale): many training σ fall below it
    let proto = tmp.path().join("noisy-pixel.toml");
    std::fs::write(
        &proto,
        "name = \"noisy-pixel\"\n[acquisition]\ncoils = 1\nsynthetic_phase = false\n\
         noise_level = 0.3\nseed = 0\ndelta = 0.1\n[acquisition.corruption]\ntype = \"pixel\"\n\
         p = 0.5\n",
    )
    .unwrap();
    let run = |out: &Path, objective: &str| {
        let mut c = amri();
        c.args(["train", "--protocol"])
            .arg(&proto)
            .args([
                "--objective",
                objective,
                "--consistency",
                "1",
                "--preset",
                "tiny",
            ])
            .args(["--steps", "2", "--batch", "4", "--no-progress", "--out"])
            .arg(out)
            .arg(&vol);
        c
    };
    let out = tmp.path().join("tw");
    run(&out, "tweedie").assert().success();
    let c = card(&out);
    assert_eq!(c["train"]["consistency_weight"], 1.0);
    for row in log_rows(&out) {
        let loss: f64 = row.split(',').nth(1).unwrap().parse().unwrap();
        assert!(loss.is_finite(), "{row}");
    }
    run(&tmp.path().join("amb"), "ambient")
        .assert()
        .failure()
        .stderr(predicate::str::contains("--objective tweedie"));
}

/// `amri train` of `vol` under `singlecoil-r4-cartesian` with `preset`, batch 2, `steps` steps,
/// into `out`, with `extra` flags.
fn small_run(preset: &str, vol: &Path, out: &Path, steps: &str, extra: &[&str]) -> Command {
    let mut c = amri();
    c.args([
        "train",
        "--protocol",
        "singlecoil-r4-cartesian",
        "--preset",
        preset,
    ])
    .args(["--steps", steps, "--batch", "2", "--no-progress", "--out"])
    .arg(out)
    .args(extra)
    .arg(vol);
    c
}

#[test]
fn sigma_distribution_flags_are_recorded_change_the_draws_and_are_kept_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = volume(tmp.path());
    let run = |out: &Path, steps: &str, extra: &[&str]| small_run("tiny", &vol, out, steps, extra);
    let shifted = tmp.path().join("shifted");
    run(
        &shifted,
        "2",
        &["--sigma-log-mean", "-3", "--sigma-log-std", "0.5"],
    )
    .assert()
    .success();
    let c = card(&shifted);
    assert_eq!(c["train"]["sigma"]["p_mean"], -3.0);
    assert_eq!(c["train"]["sigma"]["p_std"], 0.5);
    let default = tmp.path().join("default");
    run(&default, "2", &[]).assert().success();
    assert_eq!(card(&default)["train"]["sigma"]["p_mean"], -1.2);
    // same seed, data and weights: only the σ draws differ, so the losses do
    let loss = |out: &Path| -> Vec<String> {
        log_rows(out)
            .iter()
            .map(|r| r.split(',').nth(1).unwrap().to_owned())
            .collect()
    };
    assert_ne!(loss(&shifted), loss(&default));
    // a resumed run keeps its own distribution and says so
    run(&shifted, "3", &["--resume", "--sigma-log-mean", "-1"])
        .assert()
        .success()
        .stderr(predicate::str::contains("--sigma-log-mean -1 ignored"));
    assert_eq!(card(&shifted)["train"]["sigma"]["p_mean"], -3.0);
    assert!(card(&default)["train"]["sigma"].get("mix").is_none());
    // a mixture is recorded, changes the draws, and is kept on resume
    let mixed = tmp.path().join("mixed");
    run(&mixed, "2", &["--sigma-mix", "0.5:-5:0.5"])
        .assert()
        .success();
    let m = &card(&mixed)["train"]["sigma"]["mix"];
    assert_eq!(m["fraction"], 0.5);
    assert_eq!(m["p_mean"], -5.0);
    assert_eq!(m["p_std"], 0.5);
    assert_ne!(loss(&mixed), loss(&default));
    run(&mixed, "3", &["--resume", "--sigma-mix", "0.2:-5:0.5"])
        .assert()
        .success()
        .stderr(predicate::str::contains("--sigma-mix 0.2:-5:0.5 ignored"));
    assert_eq!(card(&mixed)["train"]["sigma"]["mix"]["fraction"], 0.5);
    for (flag, v) in [
        ("--sigma-log-std", "0"),
        ("--sigma-log-mean", "nan"),
        ("--sigma-mix", "1.5:-5:0.5"),
        ("--sigma-mix", "0.5:-5"),
    ] {
        run(&tmp.path().join("bad"), "1", &[flag, v])
            .assert()
            .failure()
            .stderr(predicate::str::contains(flag));
    }
}

#[test]
fn stem_and_width_flags_build_the_network_they_name_record_it_and_reconstruct() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = volume(tmp.path());
    let run =
        |out: &Path, steps: &str, extra: &[&str]| small_run("clinical", &vol, out, steps, extra);
    let out = tmp.path().join("s2c16");
    run(
        &out,
        "1",
        &["--space-to-depth", "2", "--base-channels", "16"],
    )
    .assert()
    .success();
    let c = card(&out);
    assert_eq!(c["denoiser"]["unet"]["space_to_depth"], 2);
    assert_eq!(c["denoiser"]["unet"]["base_channels"], 16);
    // the weights are the network the card names: first conv [16, 3·2², 3, 3]
    let latest = std::fs::read_to_string(out.join("latest")).unwrap();
    let st = std::fs::read(out.join(latest.trim()).join("ema.safetensors")).unwrap();
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
    assert_eq!(
        header["unet.conv_in.weight"]["shape"],
        serde_json::json!([16, 12, 3, 3])
    );
    // resume keeps the run's network and says so; the checkpoint reconstructs
    run(&out, "2", &["--resume", "--space-to-depth", "4"])
        .assert()
        .success()
        .stderr(predicate::str::contains("--space-to-depth 4 ignored"));
    let data = tmp.path().join("m.npz");
    amri()
        .args(["simulate", "--protocol", "singlecoil-r4-cartesian"])
        .arg(&vol)
        .arg(&data)
        .assert()
        .success();
    amri()
        .args(["recon", "--method", "one-step", "--no-progress", "--model"])
        .arg(&out)
        .arg(&data)
        .arg(tmp.path().join("r.nii.gz"))
        .assert()
        .success();
    for (flag, v) in [("--space-to-depth", "3"), ("--base-channels", "12")] {
        run(&tmp.path().join("bad"), "1", &[flag, v])
            .assert()
            .failure()
            .stderr(predicate::str::contains(flag));
    }
}

// ---- the measured route: training from measured files (#18) ----

/// A `slices`-slice `rows`×`cols` phantom volume written as NIfTI under `name`.
fn volume_of(dir: &Path, name: &str, slices: usize, rows: usize, cols: usize) -> PathBuf {
    let data = Array4::from_shape_fn((1, slices, rows, cols), |(_, s, i, j)| {
        let (y, x) = (
            2.0 * i as f32 / rows as f32 - 1.0,
            2.0 * j as f32 / cols as f32 - 1.0,
        );
        let outer = (x * x / 0.8 + y * y / 0.6 < 1.0) as u8 as f32;
        let inner = ((x - 0.05 * s as f32).powi(2) + y * y < 0.1) as u8 as f32;
        200.0 * outer + 150.0 * inner
    });
    let p = dir.join(name);
    amri_io::write(
        &p,
        &Scan::Image(Volume::new(data, Affine::default())),
        &WriteOptions::default(),
    )
    .unwrap();
    p
}

/// `amri simulate --protocol protocol vol out`: measured data as a scanner would give them.
fn simulate(protocol: &str, vol: &Path, out: &Path) -> PathBuf {
    amri()
        .args(["simulate", "-q", "--protocol", protocol])
        .arg(vol)
        .arg(out)
        .assert()
        .success();
    out.to_path_buf()
}

fn read_kspace(p: &Path) -> amri_core::KSpace {
    match amri_io::read(p).unwrap() {
        Scan::KSpace(k) => k,
        _ => panic!("{} is not measured data", p.display()),
    }
}

fn write_kspace(p: &Path, k: amri_core::KSpace) -> PathBuf {
    amri_io::write(p, &Scan::KSpace(k), &WriteOptions::default()).unwrap();
    p.to_path_buf()
}

/// `amri train` on measured files (no protocol), tiny preset, batch 2, seed 3.
fn train_measured(out: &Path, inputs: &[&Path], steps: usize) -> Command {
    let mut c = amri();
    c.args(["train", "--preset", "tiny", "--batch", "2", "--seed", "3"])
        .args(["--steps", &steps.to_string(), "--warmup", "2"])
        .args(["--checkpoint-every", "2", "--no-progress", "--out"])
        .arg(out)
        .args(inputs);
    c
}

/// The bytes of the latest checkpoint's raw and EMA weights.
fn weights(run: &Path) -> Vec<Vec<u8>> {
    let latest = std::fs::read_to_string(run.join("latest")).unwrap();
    let dir = run.join(latest.trim());
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    assert!(out.len() >= 2, "weights and EMA in {}", dir.display());
    out.into_iter().map(|(_, b)| b).collect()
}

#[test]
fn measured_kspace_trains_without_reference_resumes_exactly_and_finetunes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume_of(t, "vol.nii.gz", 4, 32, 32);
    let sim = simulate("singlecoil-r4-cartesian", &vol, &t.join("sim.npz"));
    let mut k = read_kspace(&sim);
    let mask = k.mask.clone().unwrap();
    // every slice has its own mask
    assert_ne!(
        mask.index_axis(ndarray::Axis(0), 0),
        mask.index_axis(ndarray::Axis(0), 1)
    );
    let reference = k.reference.take().expect("simulate writes the reference");
    let noref = write_kspace(&t.join("noref.npz"), k.clone());
    // the same measurements with a poisoned reference (huge, sign-flipped; NaN is refused by
    // the reader itself): training must never read it
    k.reference = Some(reference.mapv(|v| -3.0e38 + v));
    let poisoned = write_kspace(&t.join("poisoned.npz"), k);

    let a = t.join("a");
    train_measured(&a, &[&noref], 4)
        .assert()
        .success()
        .stderr(predicate::str::contains("measured files"));
    let c = card(&a);
    assert_eq!(c["corruption"]["protocol"], "measured");
    assert_eq!(c["corruption"]["slices"], 4);
    assert_eq!(c["objective"], "ambient_kspace");
    assert_eq!(c["corruption"]["measured"][0]["slices"], 4);
    assert_eq!(
        c["corruption"]["measured"][0]["matrix"],
        serde_json::json!([32, 32])
    );
    assert_eq!(
        c["corruption"]["acquisition"]["corruption"]["type"],
        "kspace"
    );
    assert_eq!(c["corruption"]["acquisition"]["seed"], 3);

    let p = t.join("p");
    train_measured(&p, &[&poisoned], 4).assert().success();
    assert_eq!(
        weights(&a),
        weights(&p),
        "the reference changed the weights"
    );

    // resume: 2 steps, then --resume to 4, gives the uninterrupted run's weights bit for bit
    let r = t.join("r");
    train_measured(&r, &[&noref], 2).assert().success();
    train_measured(&r, &[&noref], 4)
        .arg("--resume")
        .assert()
        .success();
    assert_eq!(
        weights(&a),
        weights(&r),
        "resume on the measured route is not exact"
    );
    // a resumed run refuses other data
    let other = simulate(
        "singlecoil-r4-cartesian",
        &volume_of(t, "v2.nii.gz", 2, 32, 32),
        &t.join("other.npz"),
    );
    train_measured(&r, &[&other], 6)
        .arg("--resume")
        .assert()
        .failure()
        .stderr(predicate::str::contains("--resume"));

    // fine-tuning a base on measured files
    let ft = t.join("ft");
    amri()
        .args(["finetune", "--base"])
        .arg(&a)
        .args(["--steps", "2", "--batch", "2", "--no-progress", "--out"])
        .arg(&ft)
        .arg(&noref)
        .assert()
        .success();
    let f = card(&ft);
    assert_eq!(f["steps"], 2);
    assert_eq!(f["corruption"]["protocol"], "measured");
    assert!(f["corruption"]["base"]
        .as_str()
        .unwrap()
        .contains("ckpt-00000004"));
}

#[test]
fn measured_multicoil_image_domain_and_mixed_matrix_sizes_train() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume_of(t, "vol.nii.gz", 4, 32, 32);
    // 8 coils, R=4 random lines with 8 % calibration lines: maps from each slice's own ACS
    let mc = simulate("brain-r4-cartesian", &vol, &t.join("mc.npz"));
    let run = t.join("mc");
    train_measured(&run, &[&mc], 2).assert().success();
    let c = card(&run);
    assert_eq!(c["corruption"]["acquisition"]["coils"], 8);
    assert_eq!(c["corruption"]["measured"][0]["coils"], 8);
    let loss: f64 = log_rows(&run)[1]
        .split(',')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(loss.is_finite() && loss > 0.0);

    // --coils 4: SVD coil compression before the ACS maps, as `amri recon --coils 4`
    let run = t.join("cc4");
    train_measured(&run, &[&mc], 2)
        .args(["--coils", "4"])
        .assert()
        .success();
    let c = card(&run);
    assert_eq!(c["corruption"]["acquisition"]["coils"], 4);
    assert_eq!(c["corruption"]["measured"][0]["coils"], 4);
    // ... and a resume with another coil count is refused (the data stream would change)
    train_measured(&run, &[&mc], 4)
        .arg("--resume")
        .assert()
        .failure();
    // --coils belongs to measured files, not the simulation route
    train(&t.join("sim-cc"), &vol, 2)
        .args(["--coils", "2"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--coils"));

    // files of different accelerations and patterns in one run: R=4 random lines and R=6
    // equispaced lines with a wider centre (a protocol file), 8 coils each
    let toml = t.join("r6.toml");
    std::fs::write(
        &toml,
        "name = \"r6\"\ndescription = \"test\"\n[acquisition]\ncoils = 8\nseed = 4\n\
         [acquisition.corruption]\ntype = \"kspace\"\npattern = \"equispaced\"\n\
         acceleration = 6.0\ncenter_fraction = 0.16\n",
    )
    .unwrap();
    let r6 = simulate(toml.to_str().unwrap(), &vol, &t.join("r6.npz"));
    let run = t.join("mixed-r");
    train_measured(&run, &[&mc, &r6], 2).assert().success();
    assert_eq!(card(&run)["corruption"]["slices"], 8);

    // image-domain data with pixel masks
    let px = simulate("pixel-90", &vol, &t.join("px.npz"));
    let run = t.join("px");
    train_measured(&run, &[&px], 2).assert().success();
    assert_eq!(card(&run)["objective"], "ambient_pixel");
    assert_eq!(
        card(&run)["corruption"]["acquisition"]["corruption"]["type"],
        "pixel"
    );

    // mixed matrix sizes: bucketed by shape
    let small = simulate(
        "singlecoil-r4-cartesian",
        &volume_of(t, "small.nii.gz", 3, 16, 32),
        &t.join("small.npz"),
    );
    let big = simulate("singlecoil-r4-cartesian", &vol, &t.join("big.npz"));
    let run = t.join("mixed");
    train_measured(&run, &[&big, &small], 6)
        .assert()
        .success()
        .stderr(predicate::str::contains("4 of 32×32, 3 of 16×32"));
    assert_eq!(card(&run)["corruption"]["slices"], 7);
    assert_eq!(log_rows(&run).len(), 6);

    // attention maps that cannot fit in memory are refused before the first step (the limit
    // is set low here: tiny at 32×32, batch 2 needs 4 × 4 blocks × 2·2·64²·4 B ≈ 1 MiB)
    train_measured(&t.join("oom"), &[&big], 2)
        .env("AMRI_MEMORY_LIMIT", "100000")
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("big.npz").and(predicate::str::contains("--preset clinical")),
        );
    assert!(!t.join("oom").join("latest").exists());

    // a size the U-Net cannot take is refused before the first step, naming the file
    let odd = simulate(
        "singlecoil-r4-cartesian",
        &volume_of(t, "odd.nii.gz", 2, 18, 32),
        &t.join("odd.npz"),
    );
    train_measured(&t.join("odd"), &[&big, &odd], 2)
        .assert()
        .failure()
        .stderr(predicate::str::contains("odd.npz").and(predicate::str::contains("multiple")));
    assert!(!t.join("odd").join("latest").exists());
}

/// A copy of the .npz bundle `src` at `dst` whose first k-space sample is NaN (the writer
/// refuses NaN, so the array bytes are patched: npy 1.0 header, then the data).
fn with_nan(src: &Path, dst: &Path) -> PathBuf {
    use std::io::{Read, Write};
    let mut z = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let name = f.name().to_owned();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        if name == "kspace.npy" {
            assert_eq!(&bytes[..6], b"\x93NUMPY");
            let off = if bytes[6] == 1 {
                10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize
            } else {
                12 + u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize
            };
            bytes[off..off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(&bytes).unwrap();
    }
    w.finish().unwrap();
    dst.to_path_buf()
}

#[test]
fn bad_measured_inputs_fail_before_the_first_step_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume_of(t, "vol.nii.gz", 2, 32, 32);
    let sc = simulate("singlecoil-r4-cartesian", &vol, &t.join("sc.npz"));
    let mc = simulate("brain-r4-cartesian", &vol, &t.join("mc.npz"));
    let fails = |inputs: &[&Path], name: &str, what: &str| {
        let out = t.join(format!("run-{name}"));
        train_measured(&out, inputs, 2)
            .assert()
            .failure()
            .stderr(predicate::str::contains(name).and(predicate::str::contains(what)));
        assert!(!out.join("latest").exists(), "{name}: a run started");
    };
    // a file without a mask (reads as fully sampled): says how to fix it
    let mut k = read_kspace(&sc);
    k.mask = None;
    let nomask = write_kspace(&t.join("nomask.npz"), k);
    fails(&[&nomask], "nomask.npz", "add a `mask` array");
    // ... unless asked to take the mask its zeros define, as BART's pics does: the same run as
    // with the file's own mask, bit for bit
    let run_inferred = t.join("inferred");
    train_measured(&run_inferred, &[&nomask], 2)
        .arg("--infer-mask")
        .assert()
        .success();
    let run_masked = t.join("masked");
    let masked = write_kspace(&t.join("masked.npz"), read_kspace(&sc));
    train_measured(&run_masked, &[&masked], 2)
        .assert()
        .success();
    assert_eq!(weights(&run_inferred), weights(&run_masked));
    // a multi-coil scan without calibration lines
    let mut k = read_kspace(&mc);
    let m = k.mask.as_mut().unwrap();
    for j in 14..18 {
        m.slice_mut(ndarray::s![.., .., j]).fill(0.0);
    }
    let noacs = write_kspace(&t.join("noacs.npz"), k);
    fails(&[&noacs], "noacs.npz", "calibration (ACS)");
    // mismatched coil counts
    fails(&[&sc, &mc], "mc.npz", "coil");
    // NaN k-space
    let nan = with_nan(&sc, &t.join("nan.npz"));
    fails(&[&nan], "nan.npz", "NaN");
    // a domain the objective cannot use
    let proj = simulate("gaussian-cs", &vol, &t.join("proj.npz"));
    fails(&[&proj], "proj.npz", "projection");
    // measured files and image volumes in one run; a protocol with measured files
    fails(&[&sc, &vol], "sc.npz", "not both");
    amri()
        .args([
            "train",
            "--protocol",
            "singlecoil-r4-cartesian",
            "--steps",
            "1",
            "--out",
        ])
        .arg(t.join("run-protocol"))
        .arg(&sc)
        .assert()
        .failure()
        .stderr(predicate::str::contains("measured files"));
    amri()
        .args([
            "train",
            "--steps",
            "1",
            "--objective",
            "supervised",
            "--out",
        ])
        .arg(t.join("run-objective"))
        .arg(&sc)
        .assert()
        .failure()
        .stderr(predicate::str::contains("ambient objective only"));
    // image volumes without a protocol
    amri()
        .args(["train", "--steps", "1", "--out"])
        .arg(t.join("run-vol"))
        .arg(&vol)
        .assert()
        .failure()
        .stderr(predicate::str::contains("vol.nii.gz").and(predicate::str::contains("--protocol")));
}

#[test]
fn measured_fastmri_h5_and_cfl_folders_train_and_an_unmasked_h5_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // a fastMRI-layout multi-coil file written by h5py (tests/fixtures/make_fastmri_like.py):
    // 4 coils, 128×128, a 1-D mask, a `reconstruction_rss` reference that training drops
    let h5 = root.join("tests/fixtures/fastmri_like.h5");
    let run = t.join("h5");
    train_measured(&run, &[&h5], 2)
        .assert()
        .success()
        .stderr(predicate::str::contains("2 of 128×128"));
    assert_eq!(card(&run)["corruption"]["measured"][0]["coils"], 4);
    // a folder holding a BART .cfl with its `_mask.cfl` (the mask is not read as a scan)
    let dir = t.join("cfl");
    std::fs::create_dir_all(&dir).unwrap();
    simulate(
        "singlecoil-r4-cartesian",
        &volume_of(t, "vol.nii.gz", 3, 32, 32),
        &dir.join("scan.cfl"),
    );
    assert!(dir.join("scan_mask.cfl").is_file());
    let run = t.join("cflrun");
    train_measured(&run, &[&dir], 2).assert().success();
    assert_eq!(card(&run)["corruption"]["slices"], 3);
    // ISMRMRD raw data (ismrmrd_generate_cartesian_shepp_logan, R=2, 4 coils, a noise scan):
    // the mask from the acquired lines, prewhitened with its own noise readouts
    let ism = root.join("crates/amri-io/tests/fixtures/ismrmrd/accel.h5");
    let run = t.join("ismrmrd");
    train_measured(&run, &[&ism], 2)
        .arg("-v")
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "prewhitened with its noise samples",
        ));
    assert_eq!(card(&run)["corruption"]["measured"][0]["coils"], 4);
    // k-space without a mask from an .h5 (97.5 % of its samples non-zero): refused, naming the
    // file and saying how to give the mask (or --infer-mask)
    let full = root.join("crates/amri-io/tests/fixtures/hdf5/singlecoil_gzip.h5");
    train_measured(&t.join("full"), &[&full], 2)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("singlecoil_gzip.h5")
                .and(predicate::str::contains("has no sampling mask"))
                .and(predicate::str::contains("--infer-mask")),
        );
}

#[test]
fn augmented_measured_training_resumes_exactly_records_the_flag_and_off_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume_of(t, "vol.nii.gz", 4, 32, 32);
    let sim = simulate("singlecoil-r4-cartesian", &vol, &t.join("sim.npz"));
    let aug = ["--augment", "flip,transpose,intensity"];

    // uninterrupted augmented run, and the same run in two pieces: the same weights
    let a = t.join("a");
    train_measured(&a, &[&sim], 4)
        .args(aug)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "augment flip,transpose,intensity=0.5:2",
        ));
    assert_eq!(
        card(&a)["corruption"]["augment"],
        serde_json::json!({"flip_rows": true, "flip_cols": true, "transpose": true,
                           "gain": [0.5, 2.0]})
    );
    let r = t.join("r");
    train_measured(&r, &[&sim], 2).args(aug).assert().success();
    // --augment left out on resume: the run's own is used
    train_measured(&r, &[&sim], 4)
        .arg("--resume")
        .assert()
        .success();
    assert_eq!(weights(&a), weights(&r), "augmented resume is not exact");
    // a different --augment on resume is refused
    train_measured(&r, &[&sim], 6)
        .args(["--resume", "--augment", "flip"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--augment"));

    // augmentation changes the training; `none` is the plain stream bit for bit, and its card
    // has no augment entry (as before the flag existed)
    let plain = t.join("plain");
    train_measured(&plain, &[&sim], 4).assert().success();
    let none = t.join("none");
    train_measured(&none, &[&sim], 4)
        .args(["--augment", "none"])
        .assert()
        .success();
    assert_eq!(weights(&plain), weights(&none));
    assert_ne!(weights(&plain), weights(&a));
    assert!(card(&none)["corruption"].get("augment").is_none());

    train_measured(&t.join("bad"), &[&sim], 2)
        .args(["--augment", "flop"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("flop"));
}

#[test]
fn simulation_route_trains_on_three_orientations_and_two_pixel_sizes_in_shape_buckets() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // 8 axial slices of 32×32 at 1 mm (RAS, identity affine)
    let vol = volume_of(t, "vol.nii.gz", 8, 32, 32);
    let out = t.join("views");
    let run = |out: &Path, views: &[&str], steps: usize| {
        let mut c = train(out, &vol, steps);
        c.args(views);
        c
    };
    let views = [
        "--orientations",
        "axial,coronal,sagittal",
        "--pixel-sizes",
        "1,2",
    ];
    // axial: 8 slices of 32×32 (1 mm) and 16×16 (2 mm); coronal and sagittal: 32 slices of
    // 8×32 (rows S/I: 8 mm of volume) and 4×16; tiny's size multiple is 4, so nothing is padded
    run(&out, &views, 2)
        .assert()
        .success()
        .stderr(predicate::str::contains(
            "8 of 32×32, 8 of 16×16, 64 of 8×32, 64 of 4×16",
        ));
    let c = card(&out);
    assert_eq!(
        c["corruption"]["views"],
        serde_json::json!({"orientations": ["axial", "coronal", "sagittal"], "pixel_mm": [1.0, 2.0]})
    );
    assert_eq!(c["corruption"]["slices"], 144);
    // resume keeps the run's views; other views are refused
    run(&out, &[], 4).arg("--resume").assert().success();
    run(&out, &["--orientations", "axial"], 6)
        .arg("--resume")
        .assert()
        .failure()
        .stderr(predicate::str::contains("--orientations"));
    // measured files are never resliced
    let sim = simulate("singlecoil-r4-cartesian", &vol, &t.join("sim.npz"));
    train_measured(&t.join("m"), &[&sim], 2)
        .args(["--pixel-sizes", "2"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--pixel-sizes"));
}

/// `amri finetune --base <run> --protocol singlecoil-r4-cartesian --batch 2 --seed 1`.
fn finetune(base: &Path, out: &Path, vol: &Path, steps: usize) -> Command {
    let mut c = amri();
    c.args(["finetune", "--base"])
        .arg(base)
        .args(["--protocol", "singlecoil-r4-cartesian", "--batch", "2"])
        .args(["--seed", "1", "--warmup", "1", "--checkpoint-every", "1"])
        .args(["--steps", &steps.to_string(), "--no-progress", "--out"])
        .arg(out)
        .arg(vol);
    c
}

#[test]
fn finetune_with_lora_and_last_layers_records_how_and_lora_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume(t);
    let base = t.join("base");
    train(&base, &vol, 2).assert().success();
    let base_ckpt = base.join(std::fs::read_to_string(base.join("latest")).unwrap().trim());

    // LoRA rank 2: 3 steps uninterrupted, and 1 step then --resume to 3
    let a = t.join("lora_a");
    finetune(&base, &a, &vol, 3)
        .args(["--adapt", "lora", "--rank", "2"])
        .assert()
        .success()
        .stderr(predicate::str::contains("updated"));
    let b = t.join("lora_b");
    finetune(&base, &b, &vol, 1)
        .args(["--adapt", "lora", "--rank", "2"])
        .assert()
        .success();
    finetune(&base, &b, &vol, 3)
        .args(["--adapt", "lora", "--rank", "2", "--resume"])
        .assert()
        .success();
    // merged weights, EMA, optimiser state and adapters bit for bit
    let wa = weights(&a);
    assert_eq!(wa.len(), 4, "model, ema, optim and lora.safetensors");
    assert_eq!(wa, weights(&b), "LoRA resume is not exact");

    let c = card(&a);
    assert_eq!(c["train"]["lora"]["rank"], 2);
    assert_eq!(c["train"]["lora"]["alpha"], 2.0);
    let f = &c["corruption"]["finetune"];
    assert_eq!(f["adapt"], "lora");
    assert_eq!(f["lora"]["rank"], 2);
    // the base's hash, computed by coreutils' sha256sum
    let sum = std::process::Command::new("sha256sum")
        .arg(base_ckpt.join("ema.safetensors"))
        .output()
        .unwrap();
    let want = String::from_utf8(sum.stdout).unwrap();
    assert_eq!(f["base_sha256"], want.split_whitespace().next().unwrap());
    let trained = f["trained_parameters"].as_u64().unwrap();
    assert!(trained > 0);
    // fewer parameters than the network holds (tiny: ≈0.79 M)
    assert!(trained < 400_000, "{trained} LoRA parameters");

    // last layers: the last decoder block and the head only
    let ll = t.join("ll");
    finetune(&base, &ll, &vol, 1)
        .args(["--adapt", "last-layers", "--train-layers", "1"])
        .assert()
        .success();
    let c = card(&ll);
    assert_eq!(c["corruption"]["finetune"]["adapt"], "last-layers");
    assert_eq!(c["corruption"]["finetune"]["train_layers"], 1);
    let frozen: Vec<String> = serde_json::from_value(c["train"]["freeze"].clone()).unwrap();
    assert!(frozen.contains(&"enc.".to_string()) && frozen.contains(&"dec.0.0.".to_string()));
    assert!(!frozen
        .iter()
        .any(|p| p.starts_with("dec.0.1") || p.starts_with("out_")));

    // full is the default and is recorded as such
    let full = t.join("full");
    finetune(&base, &full, &vol, 1).assert().success();
    assert_eq!(card(&full)["corruption"]["finetune"]["adapt"], "full");
    assert!(card(&full)["train"].get("lora").is_none());

    // flags that do not belong to the chosen adaptation are refused
    finetune(&base, &t.join("bad1"), &vol, 1)
        .args(["--rank", "4"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--adapt lora"));
    finetune(&base, &t.join("bad2"), &vol, 1)
        .args(["--adapt", "lora", "--freeze-down"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--freeze-down"));
    finetune(&base, &t.join("bad3"), &vol, 1)
        .args(["--adapt", "last-layers", "--train-layers", "99"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--train-layers 99"));
}

/// The noisy-data (Tweedie) objective on measured files: a simulated single-coil R=4 file carries
/// the σ of the noise `amri simulate` added (`noise_sigma`) and trains with it; without that
/// attribute the file is refused by name until `--noise-sigma` gives the level.
#[test]
fn measured_files_train_the_tweedie_objective_with_their_noise_level() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume_of(t, "vol.nii.gz", 2, 32, 32);
    let noisy = simulate("singlecoil-r4-cartesian", &vol, &t.join("noisy.npz"));
    let sigma = read_kspace(&noisy)
        .noise_sigma
        .expect("amri simulate records the noise level") as f32;
    assert!(sigma > 0.0);
    let run = t.join("tw");
    train_measured(&run, &[&noisy], 2)
        .args(["--objective", "tweedie"])
        .assert()
        .success();
    let c = card(&run);
    assert_eq!(c["corruption"]["objective"], "tweedie");
    assert_eq!(c["objective"], "ambient_kspace");
    assert_eq!(log_rows(&run).len(), 2);
    // the same data without their noise level: refused, naming the file, before any step
    let mut k = read_kspace(&noisy);
    k.noise_sigma = None;
    let quiet = write_kspace(&t.join("quiet.npz"), k);
    train_measured(&t.join("tw2"), &[&quiet], 2)
        .args(["--objective", "tweedie"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("quiet.npz")
                .and(predicate::str::contains("noise level is unknown"))
                .and(predicate::str::contains("--noise-sigma")),
        );
    assert!(!t.join("tw2").join("latest").exists());
    train_measured(&t.join("tw3"), &[&quiet], 2)
        .args([
            "--objective",
            "tweedie",
            "--noise-sigma",
            &sigma.to_string(),
        ])
        .assert()
        .success();
    // the flag's level is the attribute's, so training is the same, bit for bit
    assert_eq!(weights(&run), weights(&t.join("tw3")));
    // --noise-sigma belongs to the tweedie objective
    train_measured(&t.join("tw4"), &[&quiet], 1)
        .args(["--noise-sigma", "1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--objective tweedie"));
}

/// The ESPIRiT maps of a multi-coil measured run are cached in its folder: a resume reads them
/// (the log line counts them), a damaged cache file is recomputed with a warning, and the
/// resumed run's weights equal an uninterrupted run's, bit for bit.
#[test]
fn a_resumed_multicoil_run_reads_its_cached_coil_maps_and_trains_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume_of(t, "vol.nii.gz", 3, 32, 32);
    let mc = simulate("brain-r4-cartesian", &vol, &t.join("mc.npz"));
    let run = t.join("run");
    train_measured(&run, &[&mc], 2).assert().success().stderr(
        predicate::str::contains("coil maps: 0 read from").and(predicate::str::contains(
            "3 computed by ESPIRiT (0 of them replacing damaged",
        )),
    );
    let cache = run.join("espirit-cache");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "one cache file per slice: {files:?}");
    // one file cut short: detected, recomputed, the others read
    let b = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &b[..b.len() - 10]).unwrap();
    train_measured(&run, &[&mc], 4)
        .arg("--resume")
        .assert()
        .success()
        .stderr(
            predicate::str::contains("coil maps: 2 read from")
                .and(predicate::str::contains("1 of them replacing damaged"))
                .and(predicate::str::contains("truncated")),
        );
    let straight = t.join("straight");
    train_measured(&straight, &[&mc], 4).assert().success();
    assert_eq!(weights(&run), weights(&straight));
}

#[test]
fn sense_network_input_trains_on_multicoil_data_records_it_resumes_and_reconstructs() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let vol = volume_of(t, "vol.nii.gz", 3, 32, 32);
    let mc = simulate("brain-r4-cartesian", &vol, &t.join("mc.npz"));
    let run = t.join("run");
    train_measured(&run, &[&mc], 2)
        .args(["--network-input", "sense:4:0.01"])
        .assert()
        .success();
    let c = card(&run);
    assert_eq!(c["denoiser"]["input"]["sense"]["iterations"], 4);
    assert!((c["denoiser"]["input"]["sense"]["lambda"].as_f64().unwrap() - 0.01).abs() < 1e-6);
    // an adjoint run's card has no `input` field (cards from before the option keep their bytes)
    let adj = t.join("adjoint");
    train_measured(&adj, &[&mc], 2).assert().success();
    assert!(card(&adj)["denoiser"].get("input").is_none());
    // a resume with another network input keeps the run's own, with a warning
    train_measured(&run, &[&mc], 4)
        .args(["--resume", "--network-input", "adjoint"])
        .assert()
        .success()
        .stderr(predicate::str::contains("--network-input adjoint ignored"));
    assert_eq!(card(&run)["denoiser"]["input"]["sense"]["iterations"], 4);
    // the prior reconstructs the multi-coil file one-step, with and without the SENSE data step
    for dc in [false, true] {
        let out = t.join(format!("os-{dc}.nii.gz"));
        let mut cmd = amri();
        cmd.args(["recon", "--method", "one-step", "--no-progress", "--model"])
            .arg(&run)
            .arg(&mc)
            .arg(&out);
        if dc {
            cmd.arg("--data-consistency");
        }
        cmd.assert().success();
        assert!(out.exists());
    }
    // single-coil data cannot form a SENSE input: refused before training, naming the flag
    let sc = simulate("singlecoil-r4-cartesian", &vol, &t.join("sc.npz"));
    train_measured(&t.join("sc"), &[&sc], 2)
        .args(["--network-input", "sense"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("--network-input").and(predicate::str::contains("1 coil")),
        );
    assert!(!t.join("sc").join("latest").exists());
    // a malformed value is a clear parse error
    train_measured(&t.join("bad"), &[&mc], 2)
        .args(["--network-input", "sense:0"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("iterations"));
}
