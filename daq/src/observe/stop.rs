//! The stop flag every long-running command watches, and the one place that wires Ctrl-C
//! (SIGINT) and SIGTERM to it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A handle to ask a running acquisition to stop (signals, the control socket, tests).
pub type StopFlag = Arc<AtomicBool>;

/// A new stop flag, not raised.
pub fn new_stop_flag() -> StopFlag {
    Arc::new(AtomicBool::new(false))
}

/// Raises `flag` on SIGINT (Ctrl-C) and SIGTERM. The handlers stay registered for the
/// life of the process; registering several flags raises all of them.
pub fn stop_on_signals(flag: &StopFlag) -> std::io::Result<()> {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(())
}
