//! The cluster over Arrow Flight (docs/cluster.md), as processes on the loopback: two
//! acquisition nodes fed by fpga-sim over UDP and two builders give the same coincidences as
//! one `scandaq replay` of the raw archives the nodes recorded; a builder killed mid-run
//! leaves its slices listed missing while the acquisition nodes finish; a pyarrow Flight
//! client reads a node's stats; Python datafusion counts the partitioned tables.

use super::*;
use scandaq::acquire::cluster::acquisition::AcquisitionReport;
use scandaq::acquire::cluster::manifest::RunManifest;
use std::process::{Child, Stdio};
use std::time::Duration;

/// A TCP address on the loopback nobody listens on.
fn free_port_tcp() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `N` distinct TCP addresses on the loopback nobody listens on: all bound at once before
/// any is released (one at a time, the kernel may hand out the same port twice, which the
/// cluster file refuses as an address used twice).
fn free_ports_tcp<const N: usize>() -> [std::net::SocketAddr; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|k| held[k].local_addr().unwrap())
}

/// [`free_ports_tcp`] for UDP.
fn free_ports_udp<const N: usize>() -> [std::net::SocketAddr; N] {
    let held: Vec<std::net::UdpSocket> = (0..N)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|k| held[k].local_addr().unwrap())
}

/// A cluster of two acquisition nodes (`acq-a`, `acq-b`, raw archives on) and two builders
/// (`b0`, `b1`) in `dir`; the acquisition nodes' UDP inputs.
fn write_cluster(dir: &Path, slice: &str) -> (PathBuf, [std::net::SocketAddr; 2]) {
    write_cluster_with(dir, slice, "")
}

/// [`write_cluster`] with `flow` (lines of `[flow]` keys) added to its `[flow]` section.
fn write_cluster_with(dir: &Path, slice: &str, flow: &str) -> (PathBuf, [std::net::SocketAddr; 2]) {
    let udp = free_ports_udp::<2>();
    let tcp = free_ports_tcp::<4>();
    let calib = sim_dir().join("calib");
    std::fs::write(
        dir.join("acq.toml"),
        "[run]\nduration = \"120s\"\nraw_archive = true\n",
    )
    .unwrap();
    let mut text = format!(
        "slice = \"{slice}\"\nout = \"out\"\n[calibration]\ndir = \"{}\"\n[coincidences]\nwindow_ps = 4000\ndelay_ps = 100000\n[flow]\nreconnect_every = \"200ms\"\ndrain_timeout = \"20s\"\n{flow}",
        calib.display()
    );
    for (k, name) in ["acq-a", "acq-b"].iter().enumerate() {
        text += &format!(
            "[[node]]\nname = \"{name}\"\nrole = \"acquisition\"\nlisten = \"{}\"\nrun_config = \"acq.toml\"\n[[node.input]]\nudp = \"{}\"\npolicy = \"block\"\n",
            tcp[k], udp[k]
        );
    }
    for (k, name) in ["b0", "b1"].iter().enumerate() {
        text += &format!(
            "[[node]]\nname = \"{name}\"\nrole = \"builder\"\nlisten = \"{}\"\n",
            tcp[2 + k]
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
    let err = stderr_of(&mut child);
    assert!(status.success(), "{what} failed ({status}): {err}");
    no_panic(&err);
}

/// What an exited `child` wrote to its piped stderr.
fn stderr_of(child: &mut Child) -> String {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// Builders b0 and b1 of `cluster` (written in `cluster_dir`), started and listening.
fn start_builders(cluster: &Path, cluster_dir: &Path) -> Vec<Child> {
    ["b0", "b1"]
        .iter()
        .map(|b| spawn_listening(cluster, cluster_dir, b))
        .collect()
}

/// `scandaq node` for `name`, started and listening. The port was free when the cluster file
/// was written, but another test's socket may have taken it since: a node that exits saying
/// its address is in use is given a new free port in the cluster file and started again (the
/// acquisition nodes, started later, read the new one). Any other exit fails at once with the
/// node's stderr, instead of waiting out the timeout.
fn spawn_listening(cluster: &Path, cluster_dir: &Path, name: &str) -> Child {
    for _attempt in 0..3 {
        let mut child = spawn_node(cluster, name);
        let addr = listen_addr(cluster_dir, name);
        let mut exited = None;
        wait_for(
            &format!("{name} to listen on {addr}"),
            Duration::from_secs(60),
            || {
                exited = child.try_wait().unwrap();
                exited.is_some() || std::net::TcpStream::connect(addr).is_ok()
            },
        );
        let Some(status) = exited else {
            return child;
        };
        let err = stderr_of(&mut child);
        assert!(
            err.contains("in use"),
            "{name} exited ({status}) before it listened on {addr}: {err}"
        );
        let text = std::fs::read_to_string(cluster).unwrap();
        // Not a port another node of the file already has (that is refused as used twice).
        let fresh = std::iter::repeat_with(free_port_tcp)
            .find(|a| !text.contains(&a.to_string()))
            .unwrap();
        let fresh = format!("listen = \"{fresh}\"");
        std::fs::write(
            cluster,
            text.replace(&format!("listen = \"{addr}\""), &fresh),
        )
        .unwrap();
    }
    panic!("{name}: no free port in 3 attempts");
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
    let builders = start_builders(cluster, dir);
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

/// The coincidence settings of the clusters here.
fn cluster_options() -> scandaq::process::coinc_stage::CoincidenceOptions {
    scandaq::process::coinc_stage::CoincidenceOptions {
        window_ps: 4000,
        delay_ps: 100_000,
        ..Default::default()
    }
}

/// The builders cut their tables at `rotate_size = "100kB"` (several files each), so the
/// comparison below also covers a rotated sequence.
#[test]
fn two_acquisition_nodes_and_two_builders_match_a_single_process_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cluster, udp) = write_cluster(dir, "10ms");
    let text = std::fs::read_to_string(&cluster).unwrap();
    std::fs::write(&cluster, format!("rotate_size = \"100kB\"\n{text}")).unwrap();
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
    // The reference: what a user checking a cluster does: replay the raw archives the
    // acquisition nodes recorded, together, in one process (`scandaq replay A.sdq B.sdq`).
    let archives: Vec<PathBuf> = ["acq-a", "acq-b"]
        .iter()
        .map(|n| node_run_dir(&out, n).join("raw-00000.sdq"))
        .collect();
    let archives: Vec<&Path> = archives.iter().map(PathBuf::as_path).collect();
    let single = replay_archives(&archives, &dir.join("single-process"));
    let replayed = Manifest::read(&single).unwrap();
    assert_eq!(replayed.losses.get("late_hit"), 0, "{:?}", replayed.losses);
    // It decoded what the nodes did: the nodes' singles merged by (time, node) are its singles.
    let node_singles = merged_by_time_then_part(
        ["acq-a", "acq-b"]
            .iter()
            .map(|n| run_singles(&node_run_dir(&out, n)))
            .collect(),
    );
    assert!(
        run_singles(&single) == node_singles,
        "the replay's singles differ from the nodes'"
    );
    let want_prompts = pairs_under(&single, "coincidences-");
    let want_delayed = pairs_under(&single, "delayed-");
    assert!(
        want_prompts.len() > 1000,
        "the reference has {} prompts only",
        want_prompts.len()
    );
    eprintln!(
        "prompts: cluster {} single process {}",
        cluster_prompts.len(),
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
    assert_links_account(&out);
    for b in ["b0", "b1"] {
        assert_rotated_and_listed(&out.join("run=1").join(format!("builder={b}")));
    }
    // The run manifest merges the builders' counts; nothing is missing.
    let m = merged_run_manifest(&cluster, &out);
    assert_eq!(m.prompts as usize, want_prompts.len());
    assert_eq!(m.delayed as usize, want_delayed.len());
    assert!(m.complete && m.missing_slices.is_empty(), "{m:?}");
    datafusion_counts_match(&out, &m);
}

/// The builder in `dir` cut its prompt table into several files, committed them all, and its
/// manifest lists exactly the files there, with one life spanning their numbers.
fn assert_rotated_and_listed(dir: &Path) {
    let bm = builder_manifest_in(dir);
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".parquet"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = bm.files.iter().map(|f| f.path.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "{}", dir.display());
    let prompts = listed
        .iter()
        .filter(|n| n.starts_with("coincidences-"))
        .count();
    assert!(prompts >= 2, "{}: {listed:?} (no rotation)", dir.display());
    assert_eq!(bm.lives.len(), 1, "{bm:?}");
    assert_eq!(
        bm.lives[0].last_file_number,
        Some(prompts as u32 - 1),
        "{bm:?}"
    );
    let rows: u64 = bm
        .files
        .iter()
        .filter(|f| f.path.starts_with("coincidences-"))
        .map(|f| f.rows)
        .sum();
    assert_eq!(Some(&rows), bm.counts.get("prompts"), "{bm:?}");
}

fn builder_manifest_in(dir: &Path) -> scandaq::process::cluster::builder_out::BuilderManifest {
    serde_json::from_slice(
        &std::fs::read(dir.join(scandaq::process::cluster::builder_out::BUILDER_MANIFEST)).unwrap(),
    )
    .unwrap()
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
    for b in m.builders.keys() {
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
    assert_links_account(&out);
    let m = merged_run_manifest(&cluster, &out);
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

/// A node whose Flight port another process holds exits at once with an error naming the
/// address and what to do, before it says it listens (its own tests' harness relies on it).
#[test]
fn a_node_whose_port_is_taken_exits_at_once_saying_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cluster, _) = write_cluster(dir, "10ms");
    for name in ["b0", "acq-a"] {
        let addr = listen_addr(dir, name);
        let Ok(_holder) = std::net::TcpListener::bind(addr) else {
            continue; // taken already by someone else: nothing to hold
        };
        let out = Command::new(env!("CARGO_BIN_EXE_scandaq"))
            .args(["node", "--cluster", cluster.to_str().unwrap()])
            .args(["--name", name, "--run", "1"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {err}");
        assert!(
            err.contains(&format!("cannot listen on {addr}")) && err.contains("in use"),
            "{name}: {err}"
        );
        assert!(
            !err.contains("listening on"),
            "{name} said it listens: {err}"
        );
        no_panic(&err);
    }
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
    let mut b0 = spawn_listening(&cluster, dir, "b0");
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

/// In memory, through the transport's adapter (`process::cluster::slices`) and the wire
/// roles: random singles on the bench's crystals (1 G/s, so windows overlap and multiples are
/// common) split across three sources, cut into 2 us slices for three builders, equal one
/// whole-stream sorter's pairs for every multiples policy, prompt and delayed.
#[test]
fn slices_routed_to_builders_equal_the_whole_stream_sorter_for_every_policy() {
    use scandaq::process::cluster::protocol::PieceRole;
    use scandaq::process::cluster::slices::{Assembler, Slicer, cluster_spec, process};
    use scandaq::process::coinc_stage::SorterInput;
    use scandaq_core::coincidence::{CoincidenceBatch, CrystalLut, Policy, sort_coincidences};
    let calib = load_calibration_dir(&sim_dir().join("calib")).unwrap();
    let geometry = calib.calibration.geometry.as_ref().unwrap();
    let channels: Vec<u32> = geometry.crystals.keys().copied().collect();
    let lut = CrystalLut::from_geometry(geometry);
    // A plain xorshift: the data need only be varied and reproducible.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut whole = SorterInput::default();
    let mut sources: Vec<SorterInput> = (0..3).map(|_| SorterInput::default()).collect();
    let mut t = 0i64;
    for _ in 0..200_000 {
        // Mean 1 ns apart: 4 ns windows hold multiples.
        t += 1 + (next() % 2000) as i64;
        let (c, e) = (
            channels[(next() % channels.len() as u64) as usize],
            300.0 + (next() % 400) as f32,
        );
        for s in [&mut whole, &mut sources[(next() % 3) as usize]] {
            s.t_ps.push(t);
            s.channel.push(c);
            s.energy_kev.push(e);
            s.flags.push(0);
        }
    }
    let names: Vec<String> = (0..3).map(|k| format!("s{k}")).collect();
    for policy in Policy::ALL {
        let options = scandaq::process::coinc_stage::CoincidenceOptions {
            window_ps: 4000,
            delay_ps: 20_000,
            policy,
            ..Default::default()
        };
        let spec = cluster_spec(2_000_000, 3, &options).unwrap();
        let mut assemblers: Vec<Assembler> = (0..3)
            .map(|b| Assembler::new(spec, b, &names).unwrap())
            .collect();
        for (k, source) in sources.iter().enumerate() {
            let mut slicer = Slicer::new(spec, k as u32).unwrap();
            // In batches of 10 000 rows, as a node would send them.
            for from in (0..source.len()).step_by(10_000) {
                let to = (from + 10_000).min(source.len());
                let (pieces, through) = slicer.push(&source.t_ps[from..to]).unwrap();
                for p in pieces {
                    let r = (from + p.rows.start)..(from + p.rows.end);
                    let rows = SorterInput {
                        t_ps: source.t_ps[r.clone()].to_vec(),
                        channel: source.channel[r.clone()].to_vec(),
                        energy_kev: source.energy_kev[r.clone()].to_vec(),
                        flags: source.flags[r].to_vec(),
                    };
                    // Through the wire vocabulary and back.
                    let role = PieceRole::of(p.role).slicing().unwrap();
                    assemblers[p.builder as usize]
                        .add_piece(&names[k], p.slice, role, &rows, 0)
                        .unwrap();
                }
                if let Some(through) = through {
                    assemblers
                        .iter_mut()
                        .for_each(|a| a.finished_through(&names[k], through).unwrap());
                }
            }
            assemblers
                .iter_mut()
                .for_each(|a| a.end_of_stream(&names[k]).unwrap());
        }
        let (mut prompts, mut delayed) = (Vec::new(), Vec::new());
        for a in &mut assemblers {
            for job in a.take_ready() {
                let out = process(&job.job, &options, true, &lut).unwrap();
                assert!(out.exact && job.missing_sources.is_empty());
                prompts.extend(rows_of(&out.prompts));
                delayed.extend(rows_of(&out.delayed));
            }
            assert!(a.all_done());
        }
        let want = |config| {
            let mut out = CoincidenceBatch::default();
            sort_coincidences(&config, &lut, whole.singles_ref(), &mut out).unwrap();
            let mut r = rows_of(&out);
            r.sort_unstable();
            r
        };
        let want_prompts = want(options.prompt_config(true));
        let want_delayed = want(options.prompt_config(true).to_delayed(options.delay_ps));
        prompts.sort_unstable();
        delayed.sort_unstable();
        assert!(
            want_prompts.len() > 1000 && want_delayed.len() > 1000,
            "{policy:?}: too few pairs to test"
        );
        assert!(
            prompts == want_prompts,
            "{policy:?}: prompts differ ({} vs {})",
            prompts.len(),
            want_prompts.len()
        );
        assert!(
            delayed == want_delayed,
            "{policy:?}: delayed differ ({} vs {})",
            delayed.len(),
            want_delayed.len()
        );
    }
}

/// (t1, t2, channel1, channel2, flags) of every row.
fn rows_of(b: &scandaq_core::coincidence::CoincidenceBatch) -> Vec<(i64, i64, u32, u32, u16)> {
    (0..b.len())
        .map(|i| {
            (
                b.t1_ps[i],
                b.t2_ps[i],
                b.channel1[i],
                b.channel2[i],
                b.flags[i],
            )
        })
        .collect()
}

/// A builder's Flight service in this process, on its own tokio runtime, its inbound queue
/// (4 deep) handed to the test.
struct BuilderService {
    runtime: tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: scandaq::acquire::cluster::service::ServerTask,
}

impl BuilderService {
    /// Starts the service granting `credits`, listening on a port the system chose; returns it
    /// and the queue the service hands pieces to.
    fn start(
        credits: u32,
    ) -> (
        Self,
        tokio::sync::mpsc::Receiver<scandaq::acquire::cluster::service::Inbound>,
    ) {
        use scandaq::acquire::cluster::service::NodeService;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tx, inbound) = tokio::sync::mpsc::channel(4);
        let service =
            NodeService::builder(std::sync::Arc::new(|| serde_json::json!({})), tx, credits);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = service
            .serve(runtime.handle(), "127.0.0.1:0".parse().unwrap(), async {
                let _ = stop_rx.await;
            })
            .unwrap();
        (
            Self {
                runtime,
                addr,
                stop,
                server,
            },
            inbound,
        )
    }

    /// Stops the service and waits for it.
    fn stop(self) {
        let _ = self.stop.send(());
        self.runtime
            .block_on(self.server)
            .expect("the builder service's task")
            .expect("the builder service serves until stopped");
    }
}

/// A builder that takes nothing: the sender stops at its credits, queues up to its buffer and
/// then drops and counts; every routed single is either sent or counted (`cluster_buffer_full`),
/// and up to what credits, the builder's queue and the buffer hold nothing is lost. Then the
/// builder drains and the end-of-stream still arrives.
#[test]
fn a_stalled_builder_holds_the_sender_by_credits_then_drops_are_counted() {
    use scandaq::acquire::cluster::service::Inbound;
    use scandaq::process::coinc_stage::SorterInput;
    const ROWS: usize = 1000;
    let (service, mut rx) = BuilderService::start(2);
    let (runtime, addr) = (&service.runtime, service.addr);
    let mut sender = one_builder_sender(addr, runtime, 3_600_000_000_000_000, [2, 3, ROWS]);
    let tap = sender.tap.take().unwrap();
    let counters = sender.counters.clone();
    let batch = |b: usize| SorterInput {
        t_ps: (0..ROWS as i64)
            .map(|i| (b * ROWS) as i64 * 1000 + i * 1000)
            .collect(),
        channel: vec![1; ROWS],
        energy_kev: vec![511.0; ROWS],
        flags: vec![0; ROWS],
    };
    // Nothing is taken: credits (2), the service's queue (4) and the buffer (3) fill up.
    let mut b = 0;
    wait_for(
        "the sender to stall on credits",
        Duration::from_secs(60),
        || {
            tap.send(batch(b)).unwrap();
            b += 1;
            counters.reports()[0].rows_buffer_full > 0
        },
    );
    let stalled = counters.reports()[0].clone();
    assert!(
        stalled.batches_sent <= 2 + 4 + 1 + 1,
        "sent {} while the builder took nothing",
        stalled.batches_sent
    );
    // 50 more batches into the stalled link: all dropped and counted.
    for k in 0..50 {
        tap.send(batch(b + k)).unwrap();
    }
    b += 50;
    // The builder drains now; the sender ends.
    let taken = std::thread::spawn(move || {
        let mut rows = 0;
        let mut ended = false;
        while let Some(i) = rx.blocking_recv() {
            if let Inbound::Piece { meta, rows: r, .. } = i {
                rows += r.len() as u64;
                ended |= meta.role == scandaq::process::cluster::protocol::PieceRole::EndOfStream;
                if ended {
                    break;
                }
            }
        }
        (rows, ended)
    });
    drop(tap);
    let links = sender.finish().unwrap();
    let (rows_taken, ended) = taken.join().unwrap();
    let l = &links[0];
    assert!(ended, "the end of stream arrived");
    assert_eq!((l.rows_unreachable, l.queued), (0, 0));
    // What got through is what credits (2), the service's queue (4 + 1 being handed over),
    // the buffer (3) and the tap (8, sliced after the builder woke) can hold: the rest dropped.
    assert!(l.rows_sent <= (2 + 5 + 3 + 8) * ROWS as u64, "{l:?}");
    assert!(l.rows_buffer_full >= (b as u64 - 18) * ROWS as u64, "{l:?}");
    assert_eq!(
        l.rows_sent + l.rows_buffer_full,
        (b * ROWS) as u64,
        "every routed single is sent or counted"
    );
    assert_eq!(rows_taken, l.rows_sent, "the builder got every single sent");
    assert_eq!(
        l.missing_slices,
        vec![(0, "cluster_buffer_full".to_string())]
    );
    service.stop();
}

/// Singles before slice 0 (negative detector time) are owned by no builder: the sender
/// routes none of them and counts every one (`cluster_before_first_slice`).
#[test]
fn singles_before_slice_zero_are_counted_and_never_sent() {
    use scandaq::acquire::cluster::service::Inbound;
    use scandaq::process::coinc_stage::SorterInput;
    let (service, mut rx) = BuilderService::start(8);
    let (runtime, addr) = (&service.runtime, service.addr);
    let mut sender = one_builder_sender(addr, runtime, 1_000_000_000, [8, 64, 1000]);
    let tap = sender.tap.take().unwrap();
    let counters = sender.counters.clone();
    // 37 singles at -37 ns .. -1 ns, then 100 at 0 .. 99 ns.
    let t_ps: Vec<i64> = (-37..100).map(|i| i * 1000).collect();
    let n = t_ps.len();
    tap.send(SorterInput {
        t_ps,
        channel: vec![1; n],
        energy_kev: vec![511.0; n],
        flags: vec![0; n],
    })
    .unwrap();
    let taken = std::thread::spawn(move || {
        let (mut rows, mut min_t) = (0u64, i64::MAX);
        while let Some(i) = rx.blocking_recv() {
            if let Inbound::Piece { meta, rows: r, .. } = i {
                rows += r.t_ps.len() as u64;
                min_t = r.t_ps.iter().copied().fold(min_t, i64::min);
                if meta.role == scandaq::process::cluster::protocol::PieceRole::EndOfStream {
                    break;
                }
            }
        }
        (rows, min_t)
    });
    drop(tap);
    let links = sender.finish().unwrap();
    let (rows, min_t) = taken.join().unwrap();
    assert_eq!(counters.rows_before_first_slice(), 37);
    assert_eq!(links[0].rows_sent, 100);
    assert_eq!(rows, 100, "the builder got only the singles of slice 0");
    assert_eq!(min_t, 0);
    service.stop();
}

/// `scandaq cluster manifest` for run 1 of `cluster`, and the manifest it wrote under `out`.
fn merged_run_manifest(cluster: &Path, out: &Path) -> RunManifest {
    let (code, stdout, stderr) = scandaq(&[
        "cluster",
        "manifest",
        "--cluster",
        cluster.to_str().unwrap(),
        "--run",
        "1",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    serde_json::from_slice(&std::fs::read(out.join("run=1/manifest.json")).unwrap()).unwrap()
}

/// The `listen` address of node `name` in the cluster file under `dir`.
fn listen_addr(dir: &Path, name: &str) -> std::net::SocketAddr {
    let text = std::fs::read_to_string(dir.join("cluster.toml")).unwrap();
    let file: toml::Table = toml::from_str(&text).unwrap();
    file["node"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"].as_str() == Some(name))
        .and_then(|n| n["listen"].as_str())
        .unwrap()
        .parse()
        .unwrap()
}

/// A stream from a node the cluster file does not name (a stray or misconfigured sender)
/// reaches the real builder processes: its singles are refused and counted
/// (`cluster_refused_singles`), and the builders go on to commit the real nodes' slices.
#[test]
fn a_stream_from_an_unknown_node_is_refused_and_counted_and_the_builders_go_on() {
    use scandaq::acquire::cluster::sender::{Sender, SenderSettings};
    use scandaq::process::cluster::slices::cluster_spec;
    use scandaq::process::coinc_stage::SorterInput;
    let tmp = tempfile::tempdir().unwrap();
    let (cluster, _) = write_cluster(tmp.path(), "1ms");
    let builders = start_builders(&cluster, tmp.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let spec = cluster_spec(1_000_000_000, 2, &cluster_options()).unwrap();
    let send = |source: &str, source_id: u32, rows: i64| {
        let settings = SenderSettings {
            run: 1,
            source: source.into(),
            source_id,
            spec,
            builders: ["b0", "b1"]
                .iter()
                .map(|b| (b.to_string(), listen_addr(tmp.path(), b)))
                .collect(),
            credits: 8,
            buffer_batches: 64,
            batch_rows: 1000,
            reconnect_every: Duration::from_millis(200),
            drain_timeout: Duration::from_secs(30),
            energy_in_kev: true,
        };
        let mut sender = Sender::start(settings, runtime.handle().clone()).unwrap();
        let tap = sender.tap.take().unwrap();
        // Singles every 1 us over `rows` us: several 1 ms slices for both builders.
        let t_ps: Vec<i64> = (0..rows)
            .map(|i| i * 1_000_000 + i64::from(source_id))
            .collect();
        let n = t_ps.len();
        tap.send(SorterInput {
            t_ps,
            channel: vec![source_id; n],
            energy_kev: vec![511.0; n],
            flags: vec![0; n],
        })
        .unwrap();
        drop(tap);
        let links = sender.finish().unwrap();
        links.iter().map(|l| l.rows_sent).sum::<u64>()
    };
    let stray = send("intruder", 0, 3000);
    // 3000 singles plus the lead-out rows sent to two slices.
    assert!(stray >= 3000, "the stray stream went through: {stray}");
    send("acq-a", 0, 4000);
    send("acq-b", 1, 4000);
    let mut refused = 0;
    for (name, child) in ["b0", "b1"].iter().zip(builders) {
        wait_ok(child, name);
        let text = std::fs::read_to_string(
            tmp.path()
                .join(format!("out/run=1/builder={name}"))
                .join(scandaq::process::cluster::builder_out::BUILDER_MANIFEST),
        )
        .unwrap();
        let m: serde_json::Value = serde_json::from_str(&text).unwrap();
        refused += m["losses"]["cluster_refused_singles"].as_u64().unwrap_or(0);
        assert!(
            m["counts"]["source.acq-a.singles"].as_u64().unwrap() > 0,
            "{name} kept the real nodes' singles: {text}"
        );
    }
    assert_eq!(refused, stray, "every stray single is counted");
}

/// A `.sdq` raw archive `dir/name` of the bench preset (one board, source id `base`, 0.3 s at
/// 1 M hits/s, `seed`), its packets as fpga-sim emits them, after `junk` zero bytes (a
/// damaged start the reader resynchronises over, which delays its first packet).
fn bench_archive(dir: &Path, name: &str, seed: u64, base: u32, junk: usize) -> PathBuf {
    use scandaq_fpga_sim::stream::{Faults, StreamConfig, Transport, generate_packets};
    let config = StreamConfig {
        bench: BenchConfig {
            seed,
            duration_s: 0.3,
            hit_rate_hz: 1e6,
            ..BenchConfig::default()
        },
        boards: 1,
        transport: Transport::Udp {
            target: free_port_udp(),
        },
        faults: Faults::default(),
        max_packet_bytes: 8192,
        paced: false,
        out_dir: None,
        source_id_base: base,
        prerender: false,
    };
    let mut w = scandaq_sinks::archive::RawArchiveWriter::create(dir, name, "{}").unwrap();
    w.write_packets(&vec![0u8; junk], 0).unwrap();
    generate_packets(&config, |_, packet| {
        w.write_packets(packet, 1).unwrap();
        true
    })
    .unwrap();
    w.commit().unwrap();
    dir.join(name)
}

/// `scandaq replay FILES... --out out` with the cluster tests' coincidence settings; the
/// run's directory.
fn replay_archives(files: &[&Path], out: &Path) -> PathBuf {
    let calib = sim_dir().join("calib");
    let mut args = vec!["replay"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    args.extend([
        "--calib",
        calib.to_str().unwrap(),
        "--window",
        "4ns",
        "--delay",
        "100ns",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = scandaq(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    no_panic(&stderr);
    out.join("run-000001")
}

/// (t_ps, channel, energy_kev bits, flags) of a single.
type Single = (i64, u32, u32, u16);

/// `parts` merged into one order by (time, part), each part's order kept (a stable sort): how
/// the single process merges boards.
fn merged_by_time_then_part(parts: Vec<Vec<Single>>) -> Vec<Single> {
    let mut all: Vec<(usize, Single)> = parts
        .into_iter()
        .enumerate()
        .flat_map(|(k, p)| p.into_iter().map(move |r| (k, r)))
        .collect();
    all.sort_by_key(|(k, r)| (r.0, *k));
    all.into_iter().map(|(_, r)| r).collect()
}

/// Every single of the run in `dir`, in file order.
fn run_singles(dir: &Path) -> Vec<Single> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("singles-") && n.ends_with(".parquet")
        })
        .collect();
    names.sort();
    let mut rows = Vec::new();
    for p in names {
        let (b, _) = read_parquet(&p);
        let (t, c) = (col_i64(&b, "t_ps"), col_u32(&b, "channel"));
        let (e, f) = (col_f32(&b, "energy_kev"), col_u16(&b, "flags"));
        rows.extend((0..t.len()).map(|i| (t[i], c[i], e[i].to_bits(), f[i])));
    }
    rows
}

/// Two raw archives replayed as one run give the singles of each replayed alone, merged by
/// (time, board), and nothing late, whichever archive's first packet comes first: the reader
/// of the other one is held back by a damaged start (16 MiB it resynchronises over). Before
/// the archives were paced by detector time, the archive read first ran past the other's
/// first hits, which came out `late_hit`.
#[test]
fn several_raw_archives_replay_as_one_run_whatever_input_starts_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    const JUNK: usize = 16 << 20;
    let a = bench_archive(dir, "a.sdq", 11, 0, 0);
    let b = bench_archive(dir, "b.sdq", 12, 4, 0);
    let a_late = bench_archive(dir, "a-late.sdq", 11, 0, JUNK);
    let b_late = bench_archive(dir, "b-late.sdq", 12, 4, JUNK);
    // The reference: each archive alone, merged by (time, source id: a's board 0 before b's 4).
    let alone_a = run_singles(&replay_archives(&[&a], &dir.join("alone-a")));
    let alone_b = run_singles(&replay_archives(&[&b], &dir.join("alone-b")));
    assert!(alone_a.len() > 100_000 && alone_b.len() > 100_000);
    let want = merged_by_time_then_part(vec![alone_a, alone_b]);
    let mut tables = Vec::new();
    for (label, files) in [
        ("b first", [a_late.as_path(), b.as_path()]),
        ("a first", [a.as_path(), b_late.as_path()]),
    ] {
        let run = replay_archives(&files, &dir.join(label.replace(' ', "-")));
        let m = Manifest::read(&run).unwrap();
        assert_eq!(m.losses.get("late_hit"), 0, "{label}: {:?}", m.losses);
        let got = run_singles(&run);
        assert_eq!(got.len(), want.len(), "{label}: singles");
        assert!(got == want, "{label}: the merged singles differ");
        tables.push((
            pairs_under(&run, "coincidences-"),
            pairs_under(&run, "delayed-"),
        ));
    }
    assert!(tables[0].0.len() > 1000, "too few prompts to compare");
    assert!(
        tables[0] == tables[1],
        "the coincidences depend on start order"
    );
}

/// An acquisition node named in the cluster file that is never started: once the run's first
/// data arrived, the builders wait `flow.source_timeout` (2 s here) for it, then mark it lost
/// (`never_connected`), write every slice from the node that did come, list those slices
/// missing (`source_lost`, naming the absent node) and exit 0. What they wrote is exactly a
/// single-process replay of the present node's raw archive; the run manifest names the absent
/// node `never_connected`. Before the timeout the builders waited until stopped.
#[test]
fn an_acquisition_node_that_never_connects_is_marked_lost_after_the_source_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cluster, udp) = write_cluster_with(dir, "10ms", "source_timeout = \"2s\"\n");
    let builders = start_builders(&cluster, dir);
    let mut acq = spawn_node(&cluster, "acq-a");
    wait_run_running(&dir.join("out/nodes/acq-a"), &mut acq);
    wait_ok(spawn_sim(udp[0], 11, "0.3s", 0), "fpga-sim");
    wait_ok(acq, "acq-a");
    for (b, name) in builders.into_iter().zip(["b0", "b1"]) {
        wait_ok(b, name);
    }
    let out = dir.join("out");
    assert_links_account(&out);
    let mut slices_seen = Vec::new();
    for b in ["b0", "b1"] {
        let text = std::fs::read_to_string(
            out.join(format!("run=1/builder={b}"))
                .join(scandaq::process::cluster::builder_out::BUILDER_MANIFEST),
        )
        .unwrap();
        let m: scandaq::process::cluster::builder_out::BuilderManifest =
            serde_json::from_str(&text).unwrap();
        assert_eq!(m.sources["acq-b"], "never_connected", "{b}: {text}");
        assert_eq!(m.sources["acq-a"], "end_of_stream", "{b}: {text}");
        assert!(!m.complete);
        for s in &m.missing_slices {
            assert_eq!(
                (s.reason.as_str(), s.sources.clone(), s.written),
                ("source_lost", vec!["acq-b".to_string()], true),
                "{b}: {s:?}"
            );
        }
        slices_seen.extend(m.missing_slices.iter().map(|s| s.slice));
    }
    let m = merged_run_manifest(&cluster, &out);
    assert_eq!(m.acquisition["acq-b"], "never_connected", "{m:?}");
    assert_eq!(m.acquisition["acq-a"], "stopped");
    assert!(!m.complete);
    // Every slice acq-a had singles in is listed missing acq-b, once, by its builder.
    let r: AcquisitionReport =
        serde_json::from_slice(&std::fs::read(out.join("run=1/acquisition-acq-a.json")).unwrap())
            .unwrap();
    let (first, last) = r.slice_range.unwrap();
    slices_seen.sort_unstable();
    let listed: Vec<i64> = m.missing_slices.iter().map(|s| s.slice).collect();
    assert_eq!(listed, slices_seen);
    assert_eq!(listed, (first..=last).collect::<Vec<_>>(), "missing slices");
    // What was written is the single process's result for the node that came.
    let archive = node_run_dir(&out, "acq-a").join("raw-00000.sdq");
    let single = replay_archives(&[&archive], &dir.join("single-process"));
    let want_prompts = pairs_under(&single, "coincidences-");
    assert!(want_prompts.len() > 1000);
    assert!(pairs_under(&out.join("run=1"), "coincidences-") == want_prompts);
    assert!(pairs_under(&out.join("run=1"), "delayed-") == pairs_under(&single, "delayed-"));
    assert_eq!(m.prompts as usize, want_prompts.len());
}

/// Every link of every acquisition report: routed = sent + buffer full + unreachable, nothing
/// queued; the report's losses are the links' sums.
fn assert_links_account(out: &Path) {
    for name in ["acq-a", "acq-b"] {
        let path = out.join(format!("run=1/acquisition-{name}.json"));
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let r: AcquisitionReport = serde_json::from_slice(&bytes).unwrap();
        let (mut full, mut unreachable) = (0, 0);
        for l in &r.links {
            assert_eq!(
                l.rows_routed,
                l.rows_sent + l.rows_buffer_full + l.rows_unreachable,
                "{name} -> {}: routed = sent + counted: {l:?}",
                l.builder
            );
            assert_eq!(l.queued, 0, "{name}: {l:?}");
            full += l.rows_buffer_full;
            unreachable += l.rows_unreachable;
        }
        let loss = |k: &str| r.losses.get(k).copied().unwrap_or(0);
        assert_eq!(loss("cluster_buffer_full"), full, "{name}");
        assert_eq!(loss("cluster_builder_unreachable"), unreachable, "{name}");
    }
}

/// The pairs of `pairs` whose opener (`t1_ps`) lies in none of `missing`'s slices.
fn outside(
    pairs: &[(i64, i64, u32, u32)],
    missing: &[scandaq::process::cluster::builder_out::MissingSlice],
) -> Vec<(i64, i64, u32, u32)> {
    pairs
        .iter()
        .filter(|p| {
            !missing
                .iter()
                .any(|s| (s.start_ps..s.end_ps).contains(&p.0))
        })
        .copied()
        .collect()
}

/// Builder `b1` is SIGKILLed mid-run and started again with the same name: the second life
/// takes slices from a boundary on (the senders skip the slice they were in), its tables get
/// the next number and the first life's uncommitted ones stay untouched; its manifest records
/// both lives; the run manifest lists every b1 slice from the run's start to the rejoin as
/// missing and no b0 slice; everything outside the missing slices equals a single-process
/// replay of the nodes' raw archives; every link accounts for every single it routed.
#[test]
fn a_restarted_builder_rejoins_at_a_slice_boundary_and_both_lives_are_merged() {
    restarted_builder(None);
}

/// The same with the builders cutting their tables at 100 kB, b1 killed once it has committed
/// a cut: the first life's committed files stay part of the run (their slices are not
/// missing, their pairs equal the single-process replay's), only the slices after its last
/// cut up to the rejoin are missing.
#[test]
fn a_builder_killed_after_a_table_cut_keeps_the_committed_files() {
    restarted_builder(Some("100kB"));
}

fn restarted_builder(rotate_size: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cluster, udp) = write_cluster(dir, "10ms");
    if let Some(size) = rotate_size {
        let text = std::fs::read_to_string(&cluster).unwrap();
        std::fs::write(&cluster, format!("rotate_size = \"{size}\"\n{text}")).unwrap();
    }
    let (mut builders, acq, sims) = start_cluster(dir, &cluster, udp, "2s");
    let b1_dir = dir.join("out/run=1/builder=b1");
    // Killed once it has taken some slices (as `scandaq top` shows), and with rotation once
    // it has committed a cut: what it has not committed dies with it.
    wait_for(
        "b1 to receive 100 000 singles",
        Duration::from_secs(60),
        || {
            builder_received(&cluster, "b1") >= 100_000
                && (rotate_size.is_none() || b1_dir.join("coincidences-00001.parquet").is_file())
        },
    );
    let mut b1 = builders.pop().unwrap();
    b1.kill().unwrap();
    b1.wait().unwrap();
    // The second life, once the senders have noticed (they count what they could not send).
    std::thread::sleep(Duration::from_millis(300));
    let b1 = spawn_node(&cluster, "b1");
    for s in sims {
        wait_ok(s, "fpga-sim");
    }
    for (a, name) in acq.into_iter().zip(["acq-a", "acq-b"]) {
        wait_ok(a, name);
    }
    wait_ok(builders.pop().unwrap(), "b0");
    wait_ok(b1, "b1 (second life)");
    let out = dir.join("out");
    assert_links_account(&out);
    let bm = builder_manifest_in(&b1_dir);
    let (dead, second) = (&bm.lives[0], &bm.lives[bm.lives.len() - 1]);
    assert!(!dead.committed && second.committed, "{bm:?}");
    let (rejoined, _) = second.slices.expect("the second life wrote slices");
    let file = |n: u32| b1_dir.join(format!("coincidences-{n:05}.parquet"));
    let listed = |n: u32| {
        bm.files
            .iter()
            .any(|f| f.path == format!("coincidences-{n:05}.parquet"))
    };
    let covered_through = if rotate_size.is_none() {
        // Nothing overwritten: the first life's uncommitted table is still there, the
        // second life's is numbered past it.
        assert_eq!(bm.lives.len(), 2, "{bm:?}");
        assert!(
            b1_dir
                .join("coincidences-00000.parquet.inprogress")
                .is_file()
        );
        assert!(file(1).is_file() && second.file_number == 1, "{bm:?}");
        i64::MIN
    } else {
        // Every table the first life committed at a cut is on disk and listed; a table it
        // had open (if it had one) is left `.inprogress` under a life of its own; the
        // second life's tables are numbered past them all.
        let last = dead.last_file_number.unwrap_or(dead.file_number);
        for n in dead.file_number..=last {
            assert!(file(n).is_file() && listed(n), "table {n}: {bm:?}");
        }
        // (`.unlisted`: committed, but the kill came before the manifest listed it.)
        for life in &bm.lives[1..bm.lives.len() - 1] {
            assert!(!life.committed && life.slices.is_none(), "{bm:?}");
            let left = |suffix: &str| {
                b1_dir
                    .join(format!(
                        "coincidences-{:05}.parquet.{suffix}",
                        life.file_number
                    ))
                    .is_file()
            };
            assert!(left("inprogress") || left("unlisted"), "{bm:?}");
        }
        assert!(second.file_number > last, "{bm:?}");
        dead.committed_through.expect("b1 was killed after a cut")
    };
    let m = merged_run_manifest(&cluster, &out);
    let missing: Vec<i64> = m.missing_slices.iter().map(|s| s.slice).collect();
    assert!(
        missing.iter().all(|k| k % 2 == 1),
        "b0 lost nothing: {missing:?}"
    );
    let r: AcquisitionReport =
        serde_json::from_slice(&std::fs::read(out.join("run=1/acquisition-acq-a.json")).unwrap())
            .unwrap();
    let (first, last) = r.slice_range.unwrap();
    for k in (first..rejoined).filter(|k| k % 2 == 1) {
        assert_eq!(
            missing.contains(&k),
            k > covered_through,
            "slice {k} (first life, committed through {covered_through}): {missing:?}"
        );
    }
    assert!(
        (rejoined..=last).any(|k| k % 2 == 1 && !missing.contains(&k)),
        "the second life delivered no whole slice: rejoined {rejoined}, missing {missing:?}"
    );
    assert!(rejoined > first, "b1 died before it took a slice");
    // The rest is exact.
    let archives: Vec<PathBuf> = ["acq-a", "acq-b"]
        .iter()
        .map(|n| node_run_dir(&out, n).join("raw-00000.sdq"))
        .collect();
    let archives: Vec<&Path> = archives.iter().map(PathBuf::as_path).collect();
    let single = replay_archives(&archives, &dir.join("single-process"));
    for table in ["coincidences-", "delayed-"] {
        let got = outside(&pairs_under(&out.join("run=1"), table), &m.missing_slices);
        let want = outside(&pairs_under(&single, table), &m.missing_slices);
        assert!(want.len() > 100, "{table}: too few to compare");
        assert!(
            got == want,
            "{table}: {} vs {} outside the missing slices",
            got.len(),
            want.len()
        );
    }
    assert_eq!(
        m.builders["b1"].prompts as usize,
        pairs_under(&b1_dir, "coincidences-").len(),
        "the run manifest counts b1's committed tables"
    );
}

/// Singles builder `name` has received, as `scandaq top --cluster F --once` shows it (0 when
/// it does not answer).
fn builder_received(cluster: &Path, name: &str) -> u64 {
    let (_, stdout, _) = scandaq(&["top", "--cluster", cluster.to_str().unwrap(), "--once"]);
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&name) && w.get(1) == Some(&"builder"))
        .and_then(|w| w.get(5).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Acquisition node `acq-a` is SIGKILLed mid-run and started again under its name while its
/// fpga-sim keeps streaming: the builders take it back at the next slice whose rows it can
/// all have sent, list the slices in between missing (`source_lost`, naming it) and count the
/// singles of its first, partial slice (`cluster_partial_slice_singles`); from the rejoin on
/// the tables equal a single-process replay of the second life's and `acq-b`'s raw archives;
/// every link accounts for what it routed. Before, the builders refused every piece of the
/// restarted node (`cluster_refused_singles`) and the run lost it to its end.
#[test]
fn a_restarted_acquisition_node_rejoins_at_the_next_slice_boundary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    let (cluster, udp) = write_cluster(dir, "10ms");
    let (builders, mut acq, sims) = start_cluster(dir, &cluster, udp, "2s");
    wait_for(
        "b0 to receive 100 000 singles",
        Duration::from_secs(60),
        || builder_received(&cluster, "b0") >= 100_000,
    );
    let first_life = node_run_dir(&out, "acq-a");
    let mut a = acq.remove(0);
    a.kill().unwrap();
    a.wait().unwrap();
    let mut a2 = spawn_node(&cluster, "acq-a");
    let nodes = out.join("nodes/acq-a");
    let mut second_life = None;
    wait_for(
        "acq-a's second life to run",
        Duration::from_secs(60),
        || {
            if let Ok(Some(status)) = a2.try_wait() {
                panic!("acq-a's second life exited ({status})");
            }
            second_life = std::fs::read_dir(&nodes).ok().and_then(|e| {
                e.flatten().map(|e| e.path()).find(|p| {
                    *p != first_life
                        && Manifest::read(p)
                            .is_ok_and(|m| m.state == scandaq_core::run_state::RunState::Running)
                })
            });
            second_life.is_some()
        },
    );
    let second_life = second_life.unwrap();
    for s in sims {
        wait_ok(s, "fpga-sim");
    }
    wait_ok(a2, "acq-a (second life)");
    wait_ok(acq.remove(0), "acq-b");
    for (b, name) in builders.into_iter().zip(["b0", "b1"]) {
        wait_ok(b, name);
    }
    assert_links_account(&out);
    let mut partial = 0;
    for b in ["b0", "b1"] {
        let bm: scandaq::process::cluster::builder_out::BuilderManifest = serde_json::from_slice(
            &std::fs::read(
                out.join(format!("run=1/builder={b}"))
                    .join(scandaq::process::cluster::builder_out::BUILDER_MANIFEST),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(bm.sources["acq-a"], "end_of_stream", "{b}: {bm:?}");
        assert_eq!(
            bm.counts.get("source.acq-a.rejoins"),
            Some(&1),
            "{b}: {bm:?}"
        );
        assert!(
            !bm.losses.contains_key("cluster_refused_singles"),
            "{b}: {bm:?}"
        );
        partial += bm
            .losses
            .get("cluster_partial_slice_singles")
            .copied()
            .unwrap_or(0);
    }
    eprintln!("partial-slice singles dropped: {partial}");
    let m = merged_run_manifest(&cluster, &out);
    assert!(!m.complete);
    assert!(!m.missing_slices.is_empty(), "the restart lost nothing?");
    for s in &m.missing_slices {
        assert!(
            s.reason == "source_lost" && s.sources == vec!["acq-a".to_string()],
            "{s:?}"
        );
    }
    // One gap: the slices between the death and the rejoin, then whole slices again.
    let missing: Vec<i64> = m.missing_slices.iter().map(|s| s.slice).collect();
    let (gap_first, gap_last) = (missing[0], *missing.last().unwrap());
    assert_eq!(missing, (gap_first..=gap_last).collect::<Vec<_>>());
    let r: AcquisitionReport =
        serde_json::from_slice(&std::fs::read(out.join("run=1/acquisition-acq-b.json")).unwrap())
            .unwrap();
    let (_, last) = r.slice_range.unwrap();
    assert!(
        gap_last + 10 < last,
        "no whole slices after the rejoin: {missing:?}, last {last}"
    );
    // From the rejoin on, exact: the second life's archive with acq-b's, in one process.
    let archives = [
        second_life.join("raw-00000.sdq"),
        node_run_dir(&out, "acq-b").join("raw-00000.sdq"),
    ];
    let single = replay_archives(
        &[archives[0].as_path(), archives[1].as_path()],
        &dir.join("single-process"),
    );
    let from_ps = (gap_last + 1) * 10_000_000_000;
    for table in ["coincidences-", "delayed-"] {
        let after = |p: Vec<(i64, i64, u32, u32)>| -> Vec<_> {
            p.into_iter().filter(|p| p.0 >= from_ps).collect()
        };
        let got = after(pairs_under(&out.join("run=1"), table));
        let want = after(pairs_under(&single, table));
        assert!(want.len() > 100, "{table}: too few to compare");
        assert!(
            got == want,
            "{table}: {} vs {} after the rejoin",
            got.len(),
            want.len()
        );
    }
}

/// A sender for source acq-a (id 0) to the one builder at `addr`, slices of `slice_ps`;
/// `[credits, buffer_batches, batch_rows]`.
fn one_builder_sender(
    addr: std::net::SocketAddr,
    runtime: &tokio::runtime::Runtime,
    slice_ps: i64,
    [credits, buffer_batches, batch_rows]: [usize; 3],
) -> scandaq::acquire::cluster::sender::Sender {
    use scandaq::acquire::cluster::sender::{Sender, SenderSettings};
    use scandaq::process::cluster::slices::cluster_spec;
    use scandaq::process::coinc_stage::CoincidenceOptions;
    let settings = SenderSettings {
        run: 1,
        source: "acq-a".into(),
        source_id: 0,
        spec: cluster_spec(slice_ps, 1, &CoincidenceOptions::default()).unwrap(),
        builders: vec![("b0".into(), addr)],
        credits: credits as u32,
        buffer_batches,
        batch_rows,
        reconnect_every: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(60),
        energy_in_kev: true,
    };
    Sender::start(settings, runtime.handle().clone()).unwrap()
}

/// Sender settings of the in-process senders here: `source` (`source_id`) to `b0` and `b1` of
/// the cluster in `dir`.
fn test_sender(
    dir: &Path,
    source: &str,
    source_id: u32,
    runtime: &tokio::runtime::Runtime,
) -> scandaq::acquire::cluster::sender::Sender {
    use scandaq::acquire::cluster::sender::{Sender, SenderSettings};
    use scandaq::process::cluster::slices::cluster_spec;
    let settings = SenderSettings {
        run: 1,
        source: source.into(),
        source_id,
        spec: cluster_spec(1_000_000_000, 2, &cluster_options()).unwrap(),
        builders: ["b0", "b1"]
            .iter()
            .map(|b| (b.to_string(), listen_addr(dir, b)))
            .collect(),
        credits: 8,
        buffer_batches: 64,
        batch_rows: 1000,
        reconnect_every: Duration::from_millis(200),
        drain_timeout: Duration::from_secs(30),
        energy_in_kev: true,
    };
    Sender::start(settings, runtime.handle().clone()).unwrap()
}

/// Singles every 1 us at `[from, to)` us, on channel `channel`, time offset `channel` ps.
fn test_singles(from: i64, to: i64, channel: u32) -> scandaq::process::coinc_stage::SorterInput {
    let t_ps: Vec<i64> = (from..to)
        .map(|i| i * 1_000_000 + i64::from(channel))
        .collect();
    let n = t_ps.len();
    scandaq::process::coinc_stage::SorterInput {
        t_ps,
        channel: vec![channel; n],
        energy_kev: vec![511.0; n],
        flags: vec![0; n],
    }
}

/// The builder manifest of `b` under `dir`.
fn builder_manifest(
    dir: &Path,
    b: &str,
) -> scandaq::process::cluster::builder_out::BuilderManifest {
    builder_manifest_in(&dir.join(format!("out/run=1/builder={b}")))
}

/// Two stray-stream gaps, through the builder processes. (1) A second stream claiming to be
/// `acq-a` while the real `acq-a` streams (and ending its stream) is refused and counted; the
/// real `acq-a` is neither ended nor lost by it, and the run completes. (2) A builder that
/// only ever got a stray stream and is stopped (SIGTERM) still writes a manifest counting the
/// refused singles. Before: the stray's end of stream ended the real node (its later pieces
/// refused), and the stray-only builder wrote nothing.
#[test]
fn a_stray_stream_claiming_a_real_name_changes_nothing_and_every_refusal_reaches_a_manifest() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // (1)
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cluster, _) = write_cluster(dir, "1ms");
    let builders = start_builders(&cluster, dir);
    let mut real = test_sender(dir, "acq-a", 0, &runtime);
    let real_tap = real.tap.take().unwrap();
    real_tap.send(test_singles(0, 3000, 0)).unwrap();
    wait_for(
        "b0 to take acq-a's first singles",
        Duration::from_secs(60),
        || builder_received(&cluster, "b0") > 0,
    );
    let mut stray = test_sender(dir, "acq-a", 0, &runtime);
    let stray_tap = stray.tap.take().unwrap();
    stray_tap.send(test_singles(0, 2000, 7)).unwrap();
    drop(stray_tap);
    let stray_sent: u64 = stray.finish().unwrap().iter().map(|l| l.rows_sent).sum();
    real_tap.send(test_singles(3000, 6000, 0)).unwrap();
    drop(real_tap);
    let real_sent: u64 = real.finish().unwrap().iter().map(|l| l.rows_sent).sum();
    let mut b = test_sender(dir, "acq-b", 1, &runtime);
    let b_tap = b.tap.take().unwrap();
    b_tap.send(test_singles(0, 6000, 1)).unwrap();
    drop(b_tap);
    b.finish().unwrap();
    for (child, name) in builders.into_iter().zip(["b0", "b1"]) {
        wait_ok(child, name);
    }
    let (mut refused, mut received) = (0, 0);
    for name in ["b0", "b1"] {
        let m = builder_manifest(dir, name);
        assert_eq!(m.sources["acq-a"], "end_of_stream", "{name}: {m:?}");
        assert!(m.complete && m.missing_slices.is_empty(), "{name}: {m:?}");
        refused += m
            .losses
            .get("cluster_refused_singles")
            .copied()
            .unwrap_or(0);
        received += m.counts["source.acq-a.singles"];
    }
    assert_eq!(refused, stray_sent, "every stray single is counted");
    assert_eq!(received, real_sent, "every real acq-a single is taken");
    // (2)
    let tmp2 = tempfile::tempdir().unwrap();
    let dir2 = tmp2.path();
    let (cluster2, _) = write_cluster(dir2, "1ms");
    let builders = start_builders(&cluster2, dir2);
    let mut intruder = test_sender(dir2, "intruder", 0, &runtime);
    let tap = intruder.tap.take().unwrap();
    tap.send(test_singles(0, 3000, 3)).unwrap();
    drop(tap);
    let sent: u64 = intruder.finish().unwrap().iter().map(|l| l.rows_sent).sum();
    for child in &builders {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    for (child, name) in builders.into_iter().zip(["b0", "b1"]) {
        wait_ok(child, name);
    }
    let refused: u64 = ["b0", "b1"]
        .iter()
        .map(|b| {
            let m = builder_manifest(dir2, b);
            assert!(!m.complete);
            m.losses
                .get("cluster_refused_singles")
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(refused, sent, "the stray singles reach the manifests");
}
