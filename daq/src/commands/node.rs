//! `scandaq node --cluster cluster.toml --name NAME [--run R]`: runs one node of a cluster
//! (docs/cluster.md): an acquisition node runs its inputs and sends its singles to the
//! builders; a builder sorts and writes the slices it owns. SIGINT / SIGTERM stop it cleanly.

use crate::acquire::cluster::acquisition::run_acquisition;
use crate::acquire::cluster::builder::run_builder;
use crate::acquire::cluster::config::{self, Role};
use crate::observe::stop::{new_stop_flag, stop_on_signals};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::process::ExitCode;

/// `scandaq node`.
#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// The cluster file.
    #[arg(long, value_name = "FILE")]
    pub cluster: PathBuf,
    /// This node's `[[node]]` name.
    #[arg(long)]
    pub name: String,
    /// Cluster run number (acquisition nodes; every node of a run must be given the same).
    /// Builders take it from the data.
    #[arg(long)]
    pub run: Option<u64>,
}

/// Runs the node until it is done or stopped.
pub fn run(args: NodeArgs) -> Result<ExitCode> {
    let cluster = config::read(&args.cluster)?;
    let (_, node) = cluster.node(&args.name)?;
    let stop = new_stop_flag();
    stop_on_signals(&stop)?;
    match node.role {
        Role::Builder => {
            run_builder(&cluster, &args.name, stop)?;
        }
        Role::Acquisition => {
            let Some(run) = args.run else {
                bail!(
                    "an acquisition node needs --run R (the same for every node of the run; `scandaq cluster local` picks one)"
                );
            };
            let report = run_acquisition(&cluster, &args.name, run, stop)?;
            eprintln!(
                "scandaq node {}: run {} {}; sent {} singles; losses {:?}; {} slice(s) not delivered",
                args.name,
                run,
                report.state,
                report.links.iter().map(|l| l.rows_sent).sum::<u64>(),
                report.losses,
                report.missing_slices.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
