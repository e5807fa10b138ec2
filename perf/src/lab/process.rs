//! Programs started inside a namespace by PID, with their output in files, killed on drop.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use lanparty_datapath::sys::netns::Netns;

use super::LabError;

/// A program running inside a lab namespace, started through `ip netns exec` (which `exec`s the
/// program, so [`pid`](Self::pid) is the program's own PID).
///
/// Standard output and standard error go to `<dir>/<name>.out` and `<dir>/<name>.err`. Dropping
/// the value kills the program by its PID (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct LabProcess {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl LabProcess {
    /// Starts `argv` inside `ns`. `name` names the log files in `dir`
    /// (letters, digits, `-`, `_`, `.`).
    ///
    /// # Errors
    ///
    /// [`LabError::Io`] when the log files cannot be created or the program cannot start;
    /// [`LabError::Failed`] for an empty `argv` or a bad name.
    pub fn spawn<S: AsRef<OsStr>>(
        ns: &Netns,
        name: &str,
        argv: &[S],
        dir: &Path,
    ) -> Result<Self, LabError> {
        Self::spawn_with_env(ns, name, argv, &[], dir)
    }

    /// As [`spawn`](Self::spawn), with extra environment variables (for secrets that must not
    /// show in the process list).
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    pub fn spawn_with_env<S: AsRef<OsStr>>(
        ns: &Netns,
        name: &str,
        argv: &[S],
        env: &[(&str, &str)],
        dir: &Path,
    ) -> Result<Self, LabError> {
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        let Some((program, args)) = argv.split_first().filter(|_| name_ok) else {
            return Err(LabError::Failed {
                what: format!("starting {name:?}"),
                detail: "needs a plain name and a non-empty command line".into(),
            });
        };
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let io = |what: &str| {
            let what = format!("{what} for {name}");
            move |source| LabError::Io { what, source }
        };
        let out = File::create(&stdout).map_err(io("creating the stdout log"))?;
        let err = File::create(&stderr).map_err(io("creating the stderr log"))?;
        let child = ns
            .command(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io("starting the program"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
        })
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file that receives standard output.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// The file that receives standard error.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Whether the program is still running (reaps it if it has exited).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the program to exit by itself; kills it when the time is up.
    /// Returns whether it exited successfully in time.
    pub fn wait_timeout(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    self.kill();
                    return false;
                }
            }
        }
    }

    /// Kills the program by PID (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// What the program wrote on standard output so far (lossy UTF-8).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    /// What the program wrote on standard error so far (lossy UTF-8, trimmed, at most 2 KiB).
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read(&self.stderr).unwrap_or_default();
        let start = text.len().saturating_sub(2048);
        String::from_utf8_lossy(&text[start..]).trim().to_owned()
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a process with this PID exists and has not exited (a zombie waiting to be reaped
/// counts as gone).
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ") ".
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Sends SIGKILL to `pid` with the `kill` program (procps). Used only for PIDs that a lab of an
/// earlier, crashed run recorded in its own pid file.
pub(crate) fn kill_pid(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_an_exited_child_is_not() {
        assert!(pid_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Until it is reaped the child is a zombie, which counts as gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!pid_alive(pid));
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }
}
