//! What the client remembers between runs: its MAC (so the party LAN's DHCP server hands back
//! the same address and other players' ARP caches stay right) and, on Windows, the undo of the
//! interface changes it applied.
//!
//! The directory is chosen once: `--state-dir` when given; on Linux `/var/lib/lanparty-client`
//! for root, else `$XDG_STATE_HOME/lanparty-client` (or `~/.local/state/lanparty-client`); on
//! Windows `%PROGRAMDATA%\lanparty-client` (the client runs elevated to manage adapters).

use std::io;
use std::path::{Path, PathBuf};

use lanparty_datapath::Mac;

/// The file that holds our MAC, one line.
pub const MAC_FILE: &str = "mac";
/// The file that holds the undo of the applied Windows plan (JSON).
pub const UNDO_FILE: &str = "undo.json";

/// The state directory for this user on this platform (see the module documentation).
pub fn default_dir() -> PathBuf {
    #[cfg(windows)]
    {
        let base = std::env::var_os("PROGRAMDATA")
            .or_else(|| std::env::var_os("LOCALAPPDATA"))
            .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from);
        base.join("lanparty-client")
    }
    #[cfg(not(windows))]
    {
        if is_root() {
            return PathBuf::from("/var/lib/lanparty-client");
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state"))
            })
            .unwrap_or_else(std::env::temp_dir);
        base.join("lanparty-client")
    }
}

#[cfg(not(windows))]
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective user; no libc call (and no unsafe) needed.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Reads the MAC remembered in `dir`, or makes a random locally administered one and writes it
/// there. A file that does not hold a valid unicast MAC is replaced.
///
/// # Errors
///
/// When the directory cannot be created or the file cannot be written.
pub fn load_or_create_mac(dir: &Path) -> io::Result<Mac> {
    let path = dir.join(MAC_FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(mac) = text.trim().parse::<Mac>()
        && mac.validate_peer().is_ok()
    {
        return Ok(mac);
    }
    let mac = Mac::random_local(&mut rand::rng());
    std::fs::create_dir_all(dir)?;
    std::fs::write(&path, format!("{mac}\n"))?;
    Ok(mac)
}

/// Writes `text` to `dir/name` through a temporary file and a rename, so that a crash leaves
/// either the old or the new content.
///
/// # Errors
///
/// When the directory or the file cannot be written.
pub fn write_atomic(dir: &Path, name: &str, text: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("lp-state-{tag}-{}", std::process::id()))
    }

    #[test]
    fn the_mac_is_made_once_and_then_remembered() {
        let dir = temp_dir("mac");
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_or_create_mac(&dir).unwrap();
        assert!(first.is_locally_administered() && first.is_unicast());
        assert_eq!(load_or_create_mac(&dir).unwrap(), first);
        // A damaged file is replaced by a fresh valid MAC.
        std::fs::write(dir.join(MAC_FILE), "ff:ff:ff:ff:ff:ff\n").unwrap();
        let again = load_or_create_mac(&dir).unwrap();
        assert!(again.validate_peer().is_ok());
        assert_eq!(load_or_create_mac(&dir).unwrap(), again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_writes_replace_the_whole_file() {
        let dir = temp_dir("atomic");
        write_atomic(&dir, UNDO_FILE, "first, longer content").unwrap();
        write_atomic(&dir, UNDO_FILE, "second").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join(UNDO_FILE)).unwrap(),
            "second"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
