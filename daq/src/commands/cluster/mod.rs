//! `scandaq cluster ...` (docs/cluster.md): `local` starts a whole cluster on this machine as
//! child processes (with fpga-sim feeding the acquisition nodes under `--sim`) and merges the
//! run manifest at the end; `manifest` merges it for a run the nodes left; `top --cluster`
//! ([`top`]) shows every node's statistics through Flight `DoAction("stats")`.

mod local;
pub mod top;

use crate::acquire::cluster::config;
use crate::acquire::cluster::manifest::merge_run;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

/// `scandaq cluster`.
#[derive(clap::Subcommand, Debug)]
pub enum ClusterAction {
    /// Start every node of the cluster file on this machine (one command to try a cluster).
    Local(local::LocalArgs),
    /// Merge the nodes' reports of a run into OUT/run=R/manifest.json.
    Manifest {
        /// The cluster file.
        #[arg(long, value_name = "FILE")]
        cluster: PathBuf,
        /// Run number.
        #[arg(long)]
        run: u64,
    },
}

/// Runs `scandaq cluster ACTION`.
pub fn run(action: ClusterAction) -> Result<ExitCode> {
    match action {
        ClusterAction::Local(args) => local::run(args),
        ClusterAction::Manifest { cluster, run } => {
            let cluster = config::read(&cluster)?;
            let (path, m) = merge_run(&cluster, run)?;
            print_manifest(&path, &m);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The run manifest in a few lines.
fn print_manifest(path: &std::path::Path, m: &crate::acquire::cluster::manifest::RunManifest) {
    println!(
        "run {}: {} ({})",
        m.run,
        if m.complete { "complete" } else { "INCOMPLETE" },
        path.display()
    );
    for (name, b) in &m.builders {
        println!(
            "  builder {name}: {} prompts, {} delayed, {} slices{}",
            b.prompts,
            b.delayed,
            b.slices_written,
            if b.reported {
                ""
            } else {
                " (no manifest: lost)"
            }
        );
    }
    for (name, state) in &m.acquisition {
        println!("  acquisition {name}: {state}");
    }
    println!("  total: {} prompts, {} delayed", m.prompts, m.delayed);
    if !m.losses.is_empty() {
        println!("  losses: {:?}", m.losses);
    }
    if !m.missing_slices.is_empty() {
        let first = &m.missing_slices[0];
        println!(
            "  missing slices: {} (first: slice {} [{} ps, {} ps) {})",
            m.missing_slices.len(),
            first.slice,
            first.start_ps,
            first.end_ps,
            first.reason
        );
    }
}
