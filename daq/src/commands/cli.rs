//! What every subcommand's arguments share (docs/cli.md): numbers may be written negative so
//! our own parsers, not clap, say what is wrong with them ([`accept_negative_values`]), and
//! `--out DIR` means the same everywhere ([`prepare_out_dir`]).

use anyhow::{Context, Result, bail};
use std::any::TypeId;
use std::path::{Path, PathBuf};

/// The value types whose options take numbers (plain or with a unit): their values may start
/// with `-`, so `--min-hits -1` reaches the parser, which names the valid range, instead of
/// clap's "unexpected argument '-1'".
fn numeric_types() -> [TypeId; 10] {
    [
        TypeId::of::<u64>(),
        TypeId::of::<u32>(),
        TypeId::of::<u16>(),
        TypeId::of::<usize>(),
        TypeId::of::<i64>(),
        TypeId::of::<i32>(),
        TypeId::of::<f64>(),
        TypeId::of::<f32>(),
        TypeId::of::<[f64; 3]>(),
        TypeId::of::<scandaq_core::units::KevWindow>(),
    ]
}

/// `cmd` with every numeric option of it and of its subcommands (at any depth) accepting a
/// value that starts with `-` (`--window -4ns`, `--min-hits -1`), so the option's parser
/// refuses it with what is wrong and the valid range. Flags and paths are left alone (a
/// forgotten value is still an error, not the next flag read as a path).
pub fn accept_negative_values(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        let value_type = arg.get_value_parser().type_id();
        let numeric = arg.get_long().is_some()
            && arg.get_action().takes_values()
            && numeric_types().iter().any(|t| value_type == *t);
        if numeric {
            arg.allow_hyphen_values(true)
        } else {
            arg
        }
    })
    .mut_subcommands(accept_negative_values)
}

/// Makes sure `--out DIR` can be written: an existing directory is used as it is; a missing
/// one is created when its parent exists (a missing parent is most likely a typo, so it is an
/// error, as for run directories). The same rule as `demo`, `run` and `replay` apply to theirs.
pub fn prepare_out_dir(out: &Path) -> Result<()> {
    prepare_dir("--out", out)
}

/// [`prepare_out_dir`] for a directory given with another flag (named in the errors).
pub fn prepare_dir(flag: &str, out: &Path) -> Result<()> {
    if out.is_dir() {
        return Ok(());
    }
    if out.exists() {
        bail!(
            "{flag} {} exists but is not a directory: give a directory",
            out.display()
        );
    }
    let parent = parent_dir(out);
    if !parent.is_dir() {
        bail!(
            "{flag} {}: neither it nor its parent {} exists: check the path, or create it with \
             `mkdir -p {}`",
            out.display(),
            parent.display(),
            out.display()
        );
    }
    std::fs::create_dir(out)
        .with_context(|| format!("cannot create output directory {}", out.display()))
}

/// The directory `path` is in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The file an export's `--out OUT` names: OUT itself when it ends in `.EXT` (its directory
/// must exist, and it must not be a directory), else `OUT/RUN.EXT` (RUN: the run directory's
/// name), OUT made like every `--out` directory ([`prepare_out_dir`]).
pub fn out_file(run_dir: &Path, out: &Path, ext: &str) -> Result<PathBuf> {
    if out.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)) {
        if out.is_dir() {
            bail!(
                "--out {}: is a directory; give a file name ending in .{ext}, or a directory without that extension",
                out.display()
            );
        }
        let parent = parent_dir(out);
        if !parent.is_dir() {
            bail!(
                "--out {}: the directory {} does not exist; create it first (mkdir -p {})",
                out.display(),
                parent.display(),
                parent.display()
            );
        }
        return Ok(out.to_path_buf());
    }
    prepare_out_dir(out)?;
    let run_name = std::fs::canonicalize(run_dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "run".into());
    Ok(out.join(format!("{run_name}.{ext}")))
}
