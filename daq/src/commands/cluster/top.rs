//! `scandaq top --cluster cluster.toml`: every node's statistics (Flight
//! `DoAction("stats")`) as a table, refreshed every second (`--once`: one table).

use crate::acquire::cluster::config;
use crate::acquire::cluster::service::fetch_stats;
use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Prints the table once, or every second until interrupted.
pub fn run(cluster_file: &Path, once: bool) -> Result<ExitCode> {
    let cluster = config::read(cluster_file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    loop {
        let mut rows = Vec::new();
        for (node, addr) in cluster.file.node.iter().zip(&cluster.addrs) {
            let stats = runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), fetch_stats(*addr)).await
            });
            let stats = match stats {
                Ok(Ok(v)) => Some(v),
                Ok(Err(e)) => {
                    eprintln!("{}: {e:#}", node.name);
                    None
                }
                Err(_) => None,
            };
            rows.push(row(&node.name, *addr, stats));
        }
        if !once {
            print!("\x1b[2J\x1b[H");
        }
        println!("{}", table(&rows));
        if once {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

const HEADER: [&str; 8] = [
    "node",
    "role",
    "address",
    "state",
    "singles",
    "sent/received",
    "dropped",
    "prompts / pending",
];

/// One node's line.
fn row(name: &str, addr: std::net::SocketAddr, stats: Option<Value>) -> [String; 8] {
    let Some(s) = stats else {
        return [
            name.into(),
            "?".into(),
            addr.to_string(),
            "unreachable".into(),
            "".into(),
            "".into(),
            "".into(),
            "".into(),
        ];
    };
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let links = s["links"].as_array().cloned().unwrap_or_default();
    let sum = |key: &str| links.iter().map(|l| n(&l[key])).sum::<u64>();
    match s["role"].as_str() {
        Some("acquisition") => [
            name.into(),
            "acquisition".into(),
            addr.to_string(),
            s["live"]["state"].as_str().unwrap_or("?").into(),
            n(&s["live"]["singles"]).to_string(),
            sum("rows_sent").to_string(),
            (sum("rows_buffer_full") + sum("rows_unreachable")).to_string(),
            format!(
                "{} link(s) up",
                links
                    .iter()
                    .filter(|l| l["connected"].as_bool() == Some(true))
                    .count()
            ),
        ],
        _ => {
            let received: u64 = s["singles_received"]
                .as_object()
                .map_or(0, |m| m.values().map(n).sum());
            [
                name.into(),
                "builder".into(),
                addr.to_string(),
                format!("run {}", n(&s["run"])),
                "".into(),
                received.to_string(),
                "".into(),
                format!("{} / {} slices", n(&s["prompts"]), n(&s["slices_pending"])),
            ]
        }
    }
}

/// Rows under the header, columns padded.
fn table(rows: &[[String; 8]]) -> String {
    let mut widths = HEADER.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = vec![line(HEADER.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}
