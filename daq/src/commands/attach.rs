//! `scandaq top` and `scandaq ctl`: attach to a running acquisition through its control
//! socket (the dashboard, or one request for scripts).

use crate::observe::control;
use crate::observe::dashboard;
use crate::observe::stop::stop_on_signals;
use anyhow::Result;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What `scandaq ctl` asks a running acquisition.
#[derive(Subcommand)]
pub enum CtlAction {
    /// Print the run's statistics snapshot as one JSON line.
    Status,
    /// Stop the run (it drains, commits its files and writes the manifest).
    Stop,
    /// Write a marker row (wall clock, detector time, TEXT) into the run's markers.parquet.
    Marker {
        /// The marker's text.
        text: Vec<String>,
    },
}

/// `scandaq top [TARGET]`: the dashboard of a running acquisition, attached.
pub fn top(target: Option<&Path>, out: Option<PathBuf>) -> Result<ExitCode> {
    let socket = control::find_socket(target, &run_search_dirs(out))?;
    let exit = Arc::new(AtomicBool::new(false));
    stop_on_signals(&exit)?;
    dashboard::top(&socket, &exit)?;
    Ok(ExitCode::SUCCESS)
}

/// `scandaq ctl ACTION`: one request to a running acquisition's control socket.
pub fn ctl(action: CtlAction, socket: Option<&Path>, out: Option<PathBuf>) -> Result<ExitCode> {
    let socket = control::find_socket(socket, &run_search_dirs(out))?;
    match action {
        CtlAction::Status => {
            println!("{}", serde_json::to_string(&control::status(&socket)?)?);
        }
        CtlAction::Stop => {
            control::request(&socket, &serde_json::json!({"cmd": "stop"}))?;
            println!("stop requested ({})", socket.display());
        }
        CtlAction::Marker { text } => {
            let reply = control::request(
                &socket,
                &serde_json::json!({"cmd": "marker", "text": text.join(" ")}),
            )?;
            println!("{}", reply["marker"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where `top` and `ctl` look for live runs.
fn run_search_dirs(out: Option<PathBuf>) -> Vec<PathBuf> {
    match out {
        Some(o) => vec![o],
        None => vec![PathBuf::from("runs"), PathBuf::from("scandaq-runs")],
    }
}
