//! `scandaq config check FILE`: parse and validate a run configuration, and print what the
//! run would do, without running anything. A file may leave to the command line what
//! `scandaq run` takes as flags (its inputs: `--udp`/`--tcp`; its calibration: `--calib`,
//! `--petsys-config` or `--no-calib`, as the README's stream-only `meg.toml` does): the check
//! then says what the command line must add instead of failing.

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
    let (completed, left_to_flags) = completed_by_flags(&run_file);
    let v = completed.validate()?;
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
    for note in &left_to_flags {
        println!("  note: {note}");
    }
    for i in v.live.inputs.iter().take(run_file.input.len()) {
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
        _ if run_file.calibration.none == Some(true) => {
            println!("  no PET calibration (calibration.none = true)")
        }
        _ => {}
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

/// `file` with what the command line may give filled in for validation (a placeholder input,
/// no PET calibration), and one note per key left to the command line.
fn completed_by_flags(file: &run_config::RunFile) -> (run_config::RunFile, Vec<String>) {
    let mut completed = file.clone();
    let mut notes = Vec::new();
    if completed.input.is_empty() {
        completed.input.push(run_config::InputSection {
            udp: Some("127.0.0.1:0".into()),
            ..Default::default()
        });
        notes.push(
            "no [[input]]: give the inputs on the command line (scandaq run --udp HOST:PORT or \
             --tcp HOST:PORT)"
                .to_string(),
        );
    }
    let c = &completed.calibration;
    if c.dir.is_none() && c.petsys_config.is_none() && c.none.is_none() {
        completed.calibration.none = Some(true);
        notes.push(
            "no [calibration]: give it on the command line (--calib DIR or --petsys-config \
             FILE for PETsys boards; --no-calib for a run of OPM-MEG / ultrasound streams only), \
             or set calibration.dir, calibration.petsys_config or calibration.none = true"
                .to_string(),
        );
    }
    (completed, notes)
}
