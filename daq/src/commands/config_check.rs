//! `scandaq config check FILE`: parse and validate a run configuration, and print what the
//! run would do, without running anything.

use crate::acquire::run_config;
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// What `scandaq config` does with a run file.
#[derive(Subcommand)]
pub enum ConfigAction {
    /// Parse and validate FILE; prints what the run would do.
    Check {
        /// The TOML run configuration.
        file: PathBuf,
    },
}

/// Carries out a `scandaq config` action.
pub fn run(action: ConfigAction) -> Result<ExitCode> {
    let ConfigAction::Check { file } = action;
    let run_file = run_config::read(&file)?;
    let v = run_file.validate()?;
    // The coincidence settings the run would use (PETsys's [sw_trigger] under the file's
    // [coincidences] keys when the calibration is a PETsys config).
    let mut notes = Vec::new();
    let coincidences = match &v.petsys_config {
        Some(ini) => crate::process::petsys_trigger::resolve_coincidence_options(
            Default::default(),
            Some(ini),
            f64::from(v.live.clock.frequency_hz),
            Some((&run_file.coincidence_keys, &file)),
            &Default::default(),
            &mut notes,
        )?,
        None => v.live.coincidences.clone(),
    };
    println!("{}: ok", file.display());
    for i in &v.live.inputs {
        let allow = if i.allow.is_empty() {
            "any sender".to_string()
        } else {
            i.allow
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  input {}, policy {}, allow {allow}, ring {} chunks",
            i.spec, i.policy, i.ring_chunks
        );
    }
    match (&v.calib_dir, &v.petsys_config) {
        (Some(d), _) => println!("  calibration dir {}", d.display()),
        (_, Some(p)) => println!("  PETsys config {}", p.display()),
        _ => println!("  no PET calibration (calibration.none = true)"),
    }
    let limits = crate::acquire::live::limit_descriptions(&v.live.limits);
    println!(
        "  output {}  limits: {}",
        v.live.out_dir.display(),
        if limits.is_empty() {
            "none".to_string()
        } else {
            limits.join(", ")
        }
    );
    if coincidences.enabled {
        println!(
            "  coincidences: window {} ps, delay {} ps, policy {}, grouping {}",
            coincidences.window_ps,
            coincidences.delay_ps,
            coincidences.policy,
            coincidences
                .grouping
                .as_ref()
                .map_or("off".to_string(), |g| format!(
                    "{} ps / {} mm",
                    g.window_ps, g.max_distance_mm
                ))
        );
    } else {
        println!("  coincidences: off");
    }
    for n in notes {
        println!("  note: {n}");
    }
    if let (Some(ch), Some(p)) = (
        v.live.streams.meg.channels()?,
        &v.live.streams.meg.channel_table,
    ) {
        println!("  MEG channel table {}: {} channels", p.display(), ch.len());
    }
    Ok(ExitCode::SUCCESS)
}
