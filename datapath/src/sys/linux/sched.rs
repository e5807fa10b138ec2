//! Thread scheduling policy.

use std::io;

/// Puts the calling thread in `SCHED_FIFO` at `priority`, with `SCHED_RESET_ON_FORK` so that
/// threads and processes it creates start at normal priority.
///
/// # Errors
///
/// The OS error, typically EPERM without `CAP_SYS_NICE` or a real-time rlimit.
pub fn raise_current_thread(priority: u8) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: libc::c_int::from(priority),
    };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is the
    // calling thread.
    let rc = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A thread's scheduling policy, as far as softlan cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_FIFO`, what [`raise_current_thread`] sets.
    Fifo,
    /// `SCHED_OTHER`, the normal time-sharing policy.
    Other,
    /// Anything else (`SCHED_RR`, `SCHED_BATCH`, `SCHED_IDLE`, …), by number.
    Another(libc::c_int),
}

/// The scheduling policy of thread `tid` (any process).
///
/// # Errors
///
/// When the thread does not exist.
pub fn policy_of(tid: libc::pid_t) -> io::Result<Policy> {
    // SAFETY: plain syscall wrapper without pointers.
    let rc = unsafe { libc::sched_getscheduler(tid) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match rc & !libc::SCHED_RESET_ON_FORK {
        libc::SCHED_FIFO => Policy::Fifo,
        libc::SCHED_OTHER => Policy::Other,
        other => Policy::Another(other),
    })
}

/// The scheduling policy of the thread of process `pid` whose name (`/proc/PID/task/TID/comm`)
/// is `name`; `None` when no such thread runs. For tests and diagnostics of another process.
///
/// # Errors
///
/// When `/proc` cannot be read.
pub fn thread_policy(pid: u32, name: &str) -> io::Result<Option<Policy>> {
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let tid = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<libc::pid_t>().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "odd /proc task entry"))?;
        return policy_of(tid).map(Some);
    }
    Ok(None)
}
