//! The MEG processor's writer thread: owns the `meg_blocks` and `triggers` Parquet files of
//! one stream, receives record batches over a bounded channel and commits both files when the
//! sender is dropped. Files are created (`.inprogress`) before the thread starts, so a crash
//! leaves something `scandaq recover` can salvage.

use anyhow::{Context, Result};
use arrow_array::RecordBatch;
use scandaq_sinks::meg_tables::{self, BLOCKS_TABLE, MEG_SCHEMA_VERSION, TRIGGERS_TABLE};
use scandaq_sinks::{FileRecord, ParquetTableWriter};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Batches in flight between the processor and the writer.
const QUEUE: usize = 8;

/// What the writer is sent.
pub(super) enum Batch {
    /// `meg_blocks` rows.
    Blocks(RecordBatch),
    /// `triggers` rows.
    Triggers(RecordBatch),
}

/// The running writer.
pub(super) struct Writer {
    tx: Option<SyncSender<Batch>>,
    handle: Option<JoinHandle<Result<Vec<FileRecord>>>>,
}

/// Run metadata plus the table's own name and schema version.
pub(super) fn table_metadata(
    run: &[(String, String)],
    table: &str,
    source_id: u32,
) -> Vec<(String, String)> {
    let mut meta: Vec<(String, String)> = run
        .iter()
        .filter(|(k, _)| k != "scandaq.table" && k != "scandaq.schema_version")
        .cloned()
        .collect();
    meta.push(("scandaq.table".into(), table.into()));
    meta.push(("scandaq.schema_version".into(), MEG_SCHEMA_VERSION.into()));
    meta.push(("scandaq.stream".into(), source_id.to_string()));
    meta
}

impl Writer {
    /// Creates both files in `dir` and starts the thread.
    pub(super) fn start(dir: &Path, metadata: &[(String, String)], source_id: u32) -> Result<Self> {
        let blocks = ParquetTableWriter::create(
            dir,
            &meg_tables::file_name(BLOCKS_TABLE, source_id),
            meg_tables::blocks_schema(),
            &meg_tables::blocks_write_options(),
            table_metadata(metadata, BLOCKS_TABLE, source_id),
        )?;
        let triggers = ParquetTableWriter::create(
            dir,
            &meg_tables::file_name(TRIGGERS_TABLE, source_id),
            meg_tables::triggers_schema(),
            &meg_tables::small_write_options(),
            table_metadata(metadata, TRIGGERS_TABLE, source_id),
        )?;
        let (tx, rx) = sync_channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name(format!("meg-writer-{source_id}"))
            .spawn(move || write_loop(rx, blocks, triggers))
            .context("cannot start the MEG writer thread")?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Queues a batch; an error means the writer stopped (its error comes from [`Self::finish`]).
    pub(super) fn send(&mut self, batch: Batch) -> Result<()> {
        let Some(tx) = &self.tx else {
            anyhow::bail!("the MEG writer has already finished");
        };
        if tx.send(batch).is_err() {
            // The thread ended early: report its error.
            self.tx = None;
            return match self.handle.take().map(|h| h.join()) {
                Some(Ok(Err(e))) => Err(e.context("the MEG writer thread failed")),
                _ => Err(anyhow::anyhow!("the MEG writer thread stopped")),
            };
        }
        Ok(())
    }

    /// Commits both files and returns their records (blocks, then triggers).
    pub(super) fn finish(mut self) -> Result<Vec<FileRecord>> {
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(anyhow::anyhow!("the MEG writer thread panicked")),
            None => Err(anyhow::anyhow!("the MEG writer thread failed earlier")),
        }
    }
}

fn write_loop(
    rx: Receiver<Batch>,
    mut blocks: ParquetTableWriter,
    mut triggers: ParquetTableWriter,
) -> Result<Vec<FileRecord>> {
    for batch in rx {
        match batch {
            Batch::Blocks(b) => blocks.write(&b).context("writing meg_blocks")?,
            Batch::Triggers(b) => triggers.write(&b).context("writing triggers")?,
        }
    }
    Ok(vec![
        blocks.commit().context("committing meg_blocks")?,
        triggers.commit().context("committing triggers")?,
    ])
}
