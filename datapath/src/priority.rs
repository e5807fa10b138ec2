//! Scheduling priority of the datapath thread.
//!
//! Every frame waits for the datapath thread to be scheduled at each hop. At normal priority a
//! woken datapath thread queues behind whatever else runs on the machine (a game, a bulk
//! transfer's sender): on the two-CPU lab machine, with a bulk TCP flow through the tunnel,
//! median ping through the tunnel was about 3 ms and fell to about 0.7 ms with the datapath
//! threads in `SCHED_FIFO`, while the flow itself went from 1.6 to 2.1 Gbit/s
//! (docs/ARCHITECTURE.md, perf/RESULTS.md).
//!
//! This module decides; [`sys::sched`](crate::sys) applies. The datapath thread is raised only
//! when the machine has more than one CPU: with one, a flood would leave the control plane
//! (admissions, the status command) and everything else on the machine only what the
//! kernel's real-time throttling reserves.

use std::fmt;

/// The real-time priority asked for (`SCHED_FIFO`, 1–99). Low on purpose: above every
/// normal task, below the kernel's interrupt threads (50) and audio servers.
pub const REALTIME_PRIORITY: u8 = 10;

/// What the datapath thread runs at, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Raised: `SCHED_FIFO` at [`REALTIME_PRIORITY`] on Linux, time-critical thread priority on
    /// Windows.
    Realtime,
    /// Left at normal priority.
    Normal(Reason),
}

/// Why the datapath thread stays at normal priority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Turned off by the user (`--no-realtime`, `realtime = false`).
    TurnedOff,
    /// One CPU: a busy datapath would starve everything else.
    OneCpu,
    /// The system refused (no `CAP_SYS_NICE`, `RLIMIT_RTPRIO` 0, a container's policy).
    Refused(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Realtime => write!(f, "real-time priority {REALTIME_PRIORITY}"),
            Self::Normal(Reason::TurnedOff) => {
                f.write_str("normal priority (real-time turned off)")
            }
            Self::Normal(Reason::OneCpu) => {
                f.write_str("normal priority (one CPU: real-time would starve the rest)")
            }
            Self::Normal(Reason::Refused(why)) => {
                write!(f, "normal priority (real-time refused: {why})")
            }
        }
    }
}

/// Whether to ask for real-time priority: `None` to ask, or the reason not to.
pub fn decide(enabled: bool, cpus: usize) -> Option<Reason> {
    if !enabled {
        Some(Reason::TurnedOff)
    } else if cpus < 2 {
        Some(Reason::OneCpu)
    } else {
        None
    }
}

/// Raises the calling thread when [`decide`] says so and the system permits it. Threads it
/// creates afterwards start at normal priority again. Never fails: a refusal is an
/// [`Outcome::Normal`] for the caller to log.
pub fn apply_to_current_thread(enabled: bool) -> Outcome {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    if let Some(reason) = decide(enabled, cpus) {
        return Outcome::Normal(reason);
    }
    match raise() {
        Ok(()) => Outcome::Realtime,
        Err(e) => Outcome::Normal(Reason::Refused(e.to_string())),
    }
}

#[cfg(any(target_os = "linux", windows))]
fn raise() -> std::io::Result<()> {
    crate::sys::sched::raise_current_thread(REALTIME_PRIORITY)
}

#[cfg(not(any(target_os = "linux", windows)))]
fn raise() -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "not implemented on this platform",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_only_when_enabled_and_there_is_a_second_cpu() {
        assert_eq!(decide(true, 2), None);
        assert_eq!(decide(true, 64), None);
        assert_eq!(decide(true, 1), Some(Reason::OneCpu));
        assert_eq!(decide(false, 8), Some(Reason::TurnedOff));
    }

    #[test]
    fn outcomes_say_why_in_the_log() {
        assert_eq!(Outcome::Realtime.to_string(), "real-time priority 10");
        let refused = Outcome::Normal(Reason::Refused("Operation not permitted".into()));
        assert!(refused.to_string().contains("Operation not permitted"));
        assert!(
            Outcome::Normal(Reason::OneCpu)
                .to_string()
                .contains("one CPU")
        );
    }
}
