//! `scandaq cluster local --cluster cluster.toml [--sim]`: every node as a child process of
//! this one (builders first, then acquisition nodes once the builders listen), fpga-sim
//! streaming the bench preset to each acquisition node's UDP inputs under `--sim` (its
//! calibration written first where the cluster file points), then the run manifest merged.

use crate::acquire::cluster::config::{self, Cluster, Role};
use crate::acquire::cluster::manifest::merge_run;
use anyhow::{Context, Result, anyhow, bail};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

/// `scandaq cluster local`.
#[derive(clap::Args, Debug)]
pub struct LocalArgs {
    /// The cluster file.
    #[arg(long, value_name = "FILE")]
    pub cluster: PathBuf,
    /// Feed every acquisition node's UDP inputs with fpga-sim (bench preset).
    #[arg(long)]
    pub sim: bool,
    /// Detector time each simulator streams (with --sim).
    #[arg(long, default_value = "1s", value_parser = scandaq_core::units::parse_duration_s)]
    pub sim_duration: f64,
    /// Singles rate of each simulator (with --sim), e.g. 1M.
    #[arg(long, default_value = "1M")]
    pub sim_rate: String,
    /// The fpga-sim binary (default: beside this scandaq).
    #[arg(long, value_name = "FILE")]
    pub fpga_sim: Option<PathBuf>,
    /// Run number (default: one past the highest run=N under the output root).
    #[arg(long)]
    pub run: Option<u64>,
}

/// Starts the cluster, waits for it, merges the manifest.
pub fn run(args: LocalArgs) -> Result<ExitCode> {
    let cluster = config::read(&args.cluster)?;
    let run = match args.run {
        Some(r) => r,
        None => next_run(&cluster.out)?,
    };
    let exe = std::env::current_exe().context("cannot find the scandaq executable")?;
    let sim = args
        .fpga_sim
        .clone()
        .unwrap_or_else(|| exe.with_file_name("fpga-sim"));
    if args.sim {
        write_sim_calibration(&cluster, &sim)?;
    }
    eprintln!(
        "scandaq cluster local: run {run}, output {}",
        cluster.out.display()
    );
    let mut children = Children::default();
    for (node, addr) in cluster.nodes_of(Role::Builder) {
        children.spawn(
            &node.name,
            node_command(&exe, &args.cluster, &node.name, run),
        )?;
        children.wait_listening(addr)?;
    }
    for (node, addr) in cluster.nodes_of(Role::Acquisition) {
        children.spawn(
            &node.name,
            node_command(&exe, &args.cluster, &node.name, run),
        )?;
        children.wait_listening(addr)?;
    }
    if args.sim {
        let mut seed = 7;
        for (node, _) in cluster.nodes_of(Role::Acquisition) {
            for input in cluster.acquisition_run_file(node)?.input {
                let Some(udp) = input.udp else { continue };
                let mut c = Command::new(&sim);
                c.args(["--preset", "bench", "--udp", &udp, "--rate", &args.sim_rate])
                    .args([
                        "--duration",
                        &format!("{}s", args.sim_duration),
                        "--seed",
                        &seed.to_string(),
                    ]);
                children.spawn(&format!("fpga-sim {udp}"), c)?;
                seed += 1;
            }
        }
    }
    let failed = children.wait_all();
    let (path, manifest) = merge_run(&cluster, run)?;
    super::print_manifest(&path, &manifest);
    if !failed.is_empty() {
        bail!("node(s) failed: {}", failed.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `scandaq node --cluster FILE --name NAME --run R`.
fn node_command(exe: &Path, cluster: &Path, name: &str, run: u64) -> Command {
    let mut c = Command::new(exe);
    c.arg("node")
        .arg("--cluster")
        .arg(cluster)
        .args(["--name", name, "--run", &run.to_string()]);
    c
}

/// With `--sim`: fpga-sim's true calibration (seed 7, the first simulator's) where the
/// cluster file's `[calibration] dir` points, when it is not there yet.
fn write_sim_calibration(cluster: &Cluster, sim: &Path) -> Result<()> {
    let Some(dir) = cluster.builder_calibration().dir else {
        bail!(
            "--sim: set [calibration] dir in the cluster file (fpga-sim writes its calibration there)"
        );
    };
    if dir.join("tdc_calibration.tsv").is_file() {
        return Ok(());
    }
    let sim_out = dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    if let Some(parent) = sim_out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let status = Command::new(sim)
        .args([
            "--preset",
            "bench",
            "--duration",
            "1ms",
            "--seed",
            "7",
            "--out",
        ])
        .arg(&sim_out)
        .status()
        .with_context(|| {
            format!(
                "cannot run {} (build it: cargo build -p scandaq-fpga-sim)",
                sim.display()
            )
        })?;
    if !status.success() || !dir.join("tdc_calibration.tsv").is_file() {
        bail!(
            "fpga-sim did not write a calibration into {}",
            dir.display()
        );
    }
    Ok(())
}

/// One past the highest `run=N` under `out` (1 when none).
fn next_run(out: &Path) -> Result<u64> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(1);
    };
    let mut next = 1;
    for entry in entries {
        let name = entry?.file_name();
        if let Some(n) = name
            .to_string_lossy()
            .strip_prefix("run=")
            .and_then(|n| n.parse::<u64>().ok())
        {
            next = next.max(n + 1);
        }
    }
    Ok(next)
}

/// The child processes, by name.
#[derive(Default)]
struct Children {
    children: Vec<(String, Child)>,
}

impl Children {
    /// Waits (at most 60 s) until something accepts TCP connections on `addr`; fails at once
    /// when a child has exited.
    fn wait_listening(&mut self, addr: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            for (name, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("{name} exited ({status}) before {addr} came up");
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(anyhow!("no node came up on {addr} within 60 s"))
    }

    fn spawn(&mut self, name: &str, mut command: Command) -> Result<()> {
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Waits for every child; the names of those that failed.
    fn wait_all(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        for (name, child) in &mut self.children {
            match child.wait() {
                Ok(s) if s.success() => {}
                _ => failed.push(name.clone()),
            }
        }
        failed
    }
}

impl Drop for Children {
    /// A failure here leaves no node running.
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
