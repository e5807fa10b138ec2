//! The hook where the tunnelled variant starts the relay, the gateway and the clients.
//!
//! [`start_tunnel`] receives the paths of the three programs and the namespaces they run in;
//! it is to start them with [`LabProcess::spawn`] (killed by PID when the lab drops) and return
//! them. Until the programs are wired it returns [`LabError::TunnelNotWired`].

use std::path::{Path, PathBuf};

use super::process::LabProcess;
use super::{LabError, Node};

/// Where the tunnel programs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelBinaries {
    /// `lanparty-relay`.
    pub relay: PathBuf,
    /// `lanparty-gateway`.
    pub gateway: PathBuf,
    /// `lanparty-client`.
    pub client: PathBuf,
}

impl TunnelBinaries {
    /// The three programs in directory `dir` (for example `target/debug`).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            relay: dir.join("lanparty-relay"),
            gateway: dir.join("lanparty-gateway"),
            client: dir.join("lanparty-client"),
        }
    }

    /// The three programs next to the running executable (cargo puts all of a workspace's
    /// binaries in one directory).
    pub fn next_to_current_exe() -> Self {
        let dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        Self::in_dir(&dir)
    }
}

/// The namespaces and addresses the tunnel programs run with.
#[derive(Debug)]
pub struct TunnelNamespaces<'a> {
    /// The relay's namespace; it listens on `relay.wan_addr`.
    pub relay: &'a Node,
    /// The gateway's namespace; it bridges `gw.lan_if` (plugged into the party bridge, no IP)
    /// into the room and reaches the relay over `gw.wan_if`.
    pub gateway: &'a Node,
    /// The client namespaces; each client creates its TAP/TUN there (call it
    /// [`CLIENT_ADAPTER`](super::CLIENT_ADAPTER) so the checks find it) and reaches the relay
    /// over `wan_if`.
    pub clients: [&'a Node; 2],
    /// Where program logs go.
    pub log_dir: &'a Path,
}

/// Starts the relay, the gateway and both clients of the tunnelled variant and returns their
/// processes, which the lab kills on drop.
///
/// # Errors
///
/// Currently always [`LabError::TunnelNotWired`]: the relay, gateway and client programs are
/// not wired into the lab yet.
pub fn start_tunnel(
    bins: &TunnelBinaries,
    nets: &TunnelNamespaces<'_>,
) -> Result<Vec<LabProcess>, LabError> {
    let _ = (bins, nets);
    Err(LabError::TunnelNotWired)
}
