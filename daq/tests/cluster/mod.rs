//! The cluster over Arrow Flight (docs/cluster.md), as processes on the loopback: two
//! acquisition nodes fed by fpga-sim over UDP and two builders give the same coincidences as
//! one process replaying the same packets (the nodes' raw archives); a builder killed mid-run
//! leaves its slices listed missing while the acquisition nodes finish; a pyarrow Flight
//! client reads a node's stats; Python datafusion counts the partitioned tables.

use super::*;
use scandaq::acquire::cluster::acquisition::AcquisitionReport;
use scandaq::acquire::cluster::manifest::RunManifest;
use scandaq::acquire::live::{
    InputConfig, InputSpec, LiveConfig, LiveHandles, RunLimits, run_live,
};
use scandaq::acquire::ring::OverflowPolicy;
use std::process::{Child, Stdio};
use std::time::Duration;

/// A TCP address on the loopback nobody listens on.
fn free_port_tcp() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A cluster of two acquisition nodes (`acq-a`, `acq-b`, raw archives on) and two builders
/// (`b0`, `b1`) in `dir`; the acquisition nodes' UDP inputs.
fn write_cluster(dir: &Path, slice: &str) -> (PathBuf, [std::net::SocketAddr; 2]) {
    let udp = [free_port_udp(), free_port_udp()];
    let calib = sim_dir().join("calib");
    std::fs::write(
        dir.join("acq.toml"),
        "[run]\nraw_archive = true\nduration = \"120s\"\n",
    )
    .unwrap();
    let mut text = format!(
        "slice = \"{slice}\"\nout = \"out\"\n[calibration]\ndir = \"{}\"\n[coincidences]\nwindow_ps = 4000\ndelay_ps = 100000\n[flow]\nreconnect_every = \"200ms\"\ndrain_timeout = \"20s\"\n",
        calib.display()
    );
    for (k, name) in ["acq-a", "acq-b"].iter().enumerate() {
        text += &format!(
            "[[node]]\nname = \"{name}\"\nrole = \"acquisition\"\nlisten = \"{}\"\nrun_config = \"acq.toml\"\n[[node.input]]\nudp = \"{}\"\npolicy = \"block\"\n",
            free_port_tcp(),
            udp[k]
        );
    }
    for name in ["b0", "b1"] {
        text += &format!(
            "[[node]]\nname = \"{name}\"\nrole = \"builder\"\nlisten = \"{}\"\n",
            free_port_tcp()
        );
    }
    let path = dir.join("cluster.toml");
    std::fs::write(&path, text).unwrap();
    (path, udp)
}

/// `scandaq node` for `name` (stderr kept for the failure message).
fn spawn_node(cluster: &Path, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_scandaq"))
        .args([
            "node",
            "--cluster",
            cluster.to_str().unwrap(),
            "--name",
            name,
            "--run",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit and asserts it succeeded.
fn wait_ok(mut child: Child, what: &str) {
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "{what} failed ({status}): {err}");
    no_panic(&err);
}

/// Waits until a node's Flight port accepts connections.
fn wait_listening(cluster_dir: &Path, name: &str) {
    let text = std::fs::read_to_string(cluster_dir.join("cluster.toml")).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    let addr: std::net::SocketAddr = file["node"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"].as_str() == Some(name))
        .and_then(|n| n["listen"].as_str())
        .unwrap()
        .parse()
        .unwrap();
    wait_for(
        &format!("{name} to listen on {addr}"),
        Duration::from_secs(60),
        || std::net::TcpStream::connect(addr).is_ok(),
    );
}

/// fpga-sim streaming the bench preset to `udp` (one board, `source_id_base`).
fn spawn_sim(udp: std::net::SocketAddr, seed: u64, duration: &str, base: u32) -> Child {
    Command::new(fpga_sim_exe())
        .args([
            "--preset",
            "bench",
            "--udp",
            &udp.to_string(),
            "--rate",
            "1M",
        ])
        .args(["--duration", duration, "--seed", &seed.to_string()])
        .args(["--source-id-base", &base.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts builders, then acquisition nodes (waiting until each says running), then one
/// simulator per acquisition node; returns (builders, acquisition nodes, simulators).
fn start_cluster(
    dir: &Path,
    cluster: &Path,
    udp: [std::net::SocketAddr; 2],
    duration: &str,
) -> (Vec<Child>, Vec<Child>, Vec<Child>) {
    assert!(
        fpga_sim_exe().is_file(),
        "build fpga-sim first: cargo build -p scandaq-fpga-sim"
    );
    let builders: Vec<Child> = ["b0", "b1"]
        .iter()
        .map(|b| spawn_node(cluster, b))
        .collect();
    for b in ["b0", "b1"] {
        wait_listening(dir, b);
    }
    let mut acq = Vec::new();
    for name in ["acq-a", "acq-b"] {
        let mut child = spawn_node(cluster, name);
        wait_run_running(&dir.join("out/nodes").join(name), &mut child);
        acq.push(child);
    }
    let sims = vec![
        spawn_sim(udp[0], 11, duration, 0),
        spawn_sim(udp[1], 12, duration, 4),
    ];
    (builders, acq, sims)
}

/// (t1_ps, t2_ps, channel1, channel2) of every row of the `prefix-*.parquet` tables under
/// `dir` (recursively), sorted.
fn pairs_under(dir: &Path, prefix: &str) -> Vec<(i64, i64, u32, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                stack.push(p);
            } else if name.starts_with(prefix) && name.ends_with(".parquet") {
                let (b, _) = read_parquet(&p);
                let (t1, t2) = (col_i64(&b, "t1_ps"), col_i64(&b, "t2_ps"));
                let (c1, c2) = (col_u32(&b, "channel1"), col_u32(&b, "channel2"));
                out.extend((0..t1.len()).map(|i| (t1[i], t2[i], c1[i], c2[i])));
            }
        }
    }
    out.sort_unstable();
    out
}

/// The one local run directory of acquisition node `name`.
fn node_run_dir(out: &Path, name: &str) -> PathBuf {
    let nodes = out.join("nodes").join(name);
    std::fs::read_dir(&nodes)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("run-"))
        .unwrap()
}

/// The single-process reference: both nodes' raw archives replayed as one live run with the
/// cluster's coincidence settings; its run directory.
fn replay_in_one_process(out: &Path, archives: Vec<PathBuf>) -> PathBuf {
    let calib = load_calibration_dir(&sim_dir().join("calib")).unwrap();
    let live = LiveConfig {
        inputs: archives
            .into_iter()
            .map(|a| InputConfig {
                spec: InputSpec::Archive(a),
                allow: vec![],
                policy: OverflowPolicy::Block,
                ring_chunks: 64,
                ingest: Default::default(),
            })
            .collect(),
        out_dir: out.to_path_buf(),
        limits: RunLimits::default(),
        coincidences: scandaq::process::coinc_stage::CoincidenceOptions {
            window_ps: 4000,
            delay_ps: 100_000,
            ..Default::default()
        },
        ..LiveConfig::default()
    };
    let summary = run_live(
        &live,
        &calib,
        LiveHandles::new(scandaq_core::run_state::RunMode::Replay),
    )
    .unwrap();
    assert!(summary.error.is_none(), "{:?}", summary.error);
    summary.dir
}

#[test]
fn two_acquisition_nodes_and_two_builders_match_a_single_process_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cluster, udp) = write_cluster(dir, "10ms");
    let (builders, acq, sims) = start_cluster(dir, &cluster, udp, "0.3s");
    for s in sims {
        wait_ok(s, "fpga-sim");
    }
    for (a, name) in acq.into_iter().zip(["acq-a", "acq-b"]) {
        wait_ok(a, name);
    }
    for (b, name) in builders.into_iter().zip(["b0", "b1"]) {
        wait_ok(b, name);
    }
    let out = dir.join("out");
    let cluster_prompts = pairs_under(&out.join("run=1"), "coincidences-");
    let cluster_delayed = pairs_under(&out.join("run=1"), "delayed-");
    for b in ["b0", "b1"] {
        assert!(
            !pairs_under(
                &out.join("run=1").join(format!("builder={b}")),
                "coincidences-"
            )
            .is_empty(),
            "builder {b} wrote no pair"
        );
    }
    let archives = ["acq-a", "acq-b"].map(|n| node_run_dir(&out, n).join("raw-00000.sdq"));
    let reference = replay_in_one_process(&dir.join("reference"), archives.to_vec());
    let want_prompts = pairs_under(&reference, "coincidences-");
    let want_delayed = pairs_under(&reference, "delayed-");
    assert!(
        want_prompts.len() > 1000,
        "the reference has {} prompts only",
        want_prompts.len()
    );
    assert_eq!(cluster_prompts.len(), want_prompts.len(), "prompt count");
    assert!(
        cluster_prompts == want_prompts,
        "the cluster's prompts differ from the single-process replay"
    );
    assert!(!want_delayed.is_empty());
    assert!(
        cluster_delayed == want_delayed,
        "the cluster's delayed pairs differ from the single-process replay"
    );
    // The run manifest merges the builders' counts; nothing is missing.
    let (code, stdout, stderr) = scandaq(&[
        "cluster",
        "manifest",
        "--cluster",
        cluster.to_str().unwrap(),
        "--run",
        "1",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let m: RunManifest =
        serde_json::from_slice(&std::fs::read(out.join("run=1/manifest.json")).unwrap()).unwrap();
    assert_eq!(m.prompts as usize, want_prompts.len());
    assert_eq!(m.delayed as usize, want_delayed.len());
    assert!(m.complete && m.missing_slices.is_empty(), "{m:?}");
    datafusion_counts_match(&out, &m);
}

/// Python datafusion reads the hive-partitioned tables and counts per builder and in total.
fn datafusion_counts_match(out: &Path, m: &RunManifest) {
    let script = r#"
import sys, json, datafusion
ctx = datafusion.SessionContext()
ctx.register_parquet("c", sys.argv[1], table_partition_cols=[("run", "string"), ("builder", "string")], file_extension=".parquet")
rows = ctx.sql("select builder, count(*) as n from c where run = '1' group by builder order by builder").collect()
print(json.dumps({r["builder"]: r["n"] for b in rows for r in b.to_pylist()}))
"#;
    let probe = Command::new("python3")
        .args(["-c", "import datafusion"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skip_unless_ci("python3 with datafusion (pip install datafusion)");
        return;
    }
    let tables = out.join("coincidence-tables");
    // Only the prompt tables, partitioned run=R/builder=B (datafusion lists every file).
    for (b, _) in &m.builders {
        let from = out.join("run=1").join(format!("builder={b}"));
        let to = tables.join("run=1").join(format!("builder={b}"));
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&from).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("coincidences-") && name.ends_with(".parquet") {
                std::fs::hard_link(e.path(), to.join(&name)).unwrap();
            }
        }
    }
    let o = Command::new("python3")
        .args(["-c", script, tables.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let counts: BTreeMap<String, u64> = serde_json::from_slice(&o.stdout).unwrap();
    for (b, s) in &m.builders {
        assert_eq!(
            counts.get(b).copied().unwrap_or(0),
            s.prompts,
            "builder {b}: datafusion vs manifest"
        );
    }
    assert_eq!(counts.values().sum::<u64>(), m.prompts);
}

#[test]
fn a_killed_builder_leaves_its_slices_missing_and_the_acquisition_nodes_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cluster, udp) = write_cluster(dir, "10ms");
    let (mut builders, acq, sims) = start_cluster(dir, &cluster, udp, "1s");
    // Kill b1 once it has written a slice (its tables are then uncommitted: all lost).
    let b1_dir = dir.join("out/run=1/builder=b1");
    wait_for("b1 to start its output", Duration::from_secs(60), || {
        b1_dir.is_dir()
    });
    let mut b1 = builders.pop().unwrap();
    b1.kill().unwrap();
    b1.wait().unwrap();
    for s in sims {
        wait_ok(s, "fpga-sim");
    }
    for (a, name) in acq.into_iter().zip(["acq-a", "acq-b"]) {
        wait_ok(a, name);
    }
    wait_ok(builders.pop().unwrap(), "b0");
    let out = dir.join("out");
    let (code, stdout, stderr) = scandaq(&[
        "cluster",
        "manifest",
        "--cluster",
        cluster.to_str().unwrap(),
        "--run",
        "1",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let m: RunManifest =
        serde_json::from_slice(&std::fs::read(out.join("run=1/manifest.json")).unwrap()).unwrap();
    assert!(!m.complete);
    assert!(
        m.builders["b0"].complete && m.builders["b0"].prompts > 0,
        "{m:?}"
    );
    assert!(!m.builders["b1"].reported);
    // Every odd slice of the run (b1's) is missing, no even one (b0's).
    let mut range = None::<(i64, i64)>;
    for name in ["acq-a", "acq-b"] {
        let r: AcquisitionReport = serde_json::from_slice(
            &std::fs::read(out.join(format!("run=1/acquisition-{name}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(r.state, "stopped");
        assert!(
            r.losses
                .get("cluster_builder_unreachable")
                .copied()
                .unwrap_or(0)
                > 0,
            "{r:?}"
        );
        // Bounded: the queue to a dead builder is drained and counted, not kept.
        assert!(
            r.peak_rss_bytes < 1 << 30,
            "{name} peaked at {} bytes",
            r.peak_rss_bytes
        );
        let (a, b) = r.slice_range.unwrap();
        range = Some(range.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
    }
    let (first, last) = range.unwrap();
    let missing: Vec<i64> = m.missing_slices.iter().map(|s| s.slice).collect();
    let odd: Vec<i64> = (first..=last).filter(|k| k % 2 == 1).collect();
    assert_eq!(missing, odd, "missing slices");
    for s in &m.missing_slices {
        assert_eq!(
            (s.start_ps, s.end_ps),
            (s.slice * 10_000_000_000, (s.slice + 1) * 10_000_000_000)
        );
    }
    assert!(m.losses["cluster_builder_unreachable"] > 0);
}

#[test]
fn a_pyarrow_flight_client_reads_a_nodes_stats() {
    let probe = Command::new("python3")
        .args(["-c", "import pyarrow.flight"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skip_unless_ci("python3 with pyarrow (pip install pyarrow)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cluster, _) = write_cluster(dir, "10ms");
    let mut b0 = spawn_node(&cluster, "b0");
    wait_listening(dir, "b0");
    let text = std::fs::read_to_string(&cluster).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    let addr = file["node"].as_array().unwrap()[2]["listen"]
        .as_str()
        .unwrap()
        .to_string();
    let script = r#"
import sys, json
import pyarrow.flight as flight
client = flight.connect("grpc://" + sys.argv[1])
actions = [a.type for a in client.list_actions()]
body = list(client.do_action(flight.Action("stats", b"")))[0].body.to_pybytes()
print(json.dumps({"actions": actions, "stats": json.loads(body)}))
"#;
    let o = Command::new("python3")
        .args(["-c", script, &addr])
        .output()
        .unwrap();
    let _ = b0.kill();
    let _ = b0.wait();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["actions"], serde_json::json!(["stats"]));
    assert_eq!(v["stats"]["node"], "b0");
    assert_eq!(v["stats"]["role"], "builder");
    assert_eq!(v["stats"]["slices_written"], 0);
}
