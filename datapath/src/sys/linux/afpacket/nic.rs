//! Checks for NIC settings that break transparent bridging; they produce warnings, not errors.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `ETHTOOL_GFLAGS`: legacy feature flags.
const ETHTOOL_GFLAGS: u32 = 0x25;
/// `ETHTOOL_GGRO`: generic receive offload.
const ETHTOOL_GGRO: u32 = 0x2b;
/// `ETH_FLAG_RXVLAN`: the NIC strips VLAN tags on receive.
const ETH_FLAG_RXVLAN: u32 = 1 << 8;
/// `ETH_FLAG_LRO`: large receive offload.
const ETH_FLAG_LRO: u32 = 1 << 15;

/// A NIC setting that harms a gateway bridging this interface.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NicWarning {
    /// Generic receive offload merges TCP segments into super-frames before packet sockets see
    /// them; they exceed the room MTU.
    Gro {
        /// Interface name.
        ifname: String,
    },
    /// Large receive offload merges segments in the NIC, with the same effect as GRO.
    Lro {
        /// Interface name.
        ifname: String,
    },
    /// The NIC strips VLAN tags; the gateway sees them only as ring metadata.
    RxVlanOffload {
        /// Interface name.
        ifname: String,
    },
    /// A Wi-Fi interface: without 4-address (WDS) mode an access point drops frames from MAC
    /// addresses other than the station's own, so remote players' frames never arrive.
    Wireless {
        /// Interface name.
        ifname: String,
    },
}

impl fmt::Display for NicWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gro { ifname } => write!(
                f,
                "GRO is on for {ifname}: merged super-frames will not fit the room; \
                 turn it off with `ethtool -K {ifname} gro off`"
            ),
            Self::Lro { ifname } => write!(
                f,
                "LRO is on for {ifname}: merged super-frames will not fit the room; \
                 turn it off with `ethtool -K {ifname} lro off`"
            ),
            Self::RxVlanOffload { ifname } => write!(
                f,
                "{ifname} strips VLAN tags on receive (rx-vlan-offload); tagged traffic loses \
                 its tags unless re-inserted; `ethtool -K {ifname} rxvlan off` keeps them"
            ),
            Self::Wireless { ifname } => write!(
                f,
                "{ifname} is a Wi-Fi interface: bridging needs 4-address (WDS) mode on both \
                 ends, otherwise other hosts' frames are dropped; prefer a wired uplink"
            ),
        }
    }
}

/// Queries `ifname` (in the calling thread's network namespace) and returns what may break
/// bridging. Settings that cannot be read are not reported.
pub fn nic_warnings(ifname: &str) -> Vec<NicWarning> {
    let mut out = Vec::new();
    let owned = || ifname.to_owned();
    if let Ok(sock) = ioctl_socket() {
        if ethtool_get(&sock, ifname, ETHTOOL_GGRO).is_ok_and(|v| v != 0) {
            out.push(NicWarning::Gro { ifname: owned() });
        }
        if let Ok(flags) = ethtool_get(&sock, ifname, ETHTOOL_GFLAGS) {
            if flags & ETH_FLAG_LRO != 0 {
                out.push(NicWarning::Lro { ifname: owned() });
            }
            if flags & ETH_FLAG_RXVLAN != 0 {
                out.push(NicWarning::RxVlanOffload { ifname: owned() });
            }
        }
    }
    let wext = sock_wireless(ifname);
    if wext || is_wireless(ifname) {
        out.push(NicWarning::Wireless { ifname: owned() });
    }
    out
}

/// Whether `ifname` answers the wireless-extensions `SIOCGIWNAME` query. Unlike sysfs, this
/// works in the calling thread's network namespace.
fn sock_wireless(ifname: &str) -> bool {
    /// `SIOCGIWNAME`: get the wireless protocol name.
    const SIOCGIWNAME: libc::c_ulong = 0x8b01;
    let Ok(sock) = ioctl_socket() else {
        return false;
    };
    let Ok(mut req) = super::ifreq_for(ifname) else {
        return false;
    };
    // SAFETY: `req` is a valid ifreq naming the interface and larger than the `iwreq` the
    // kernel writes (name plus a 16-byte union).
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIWNAME, &mut req) };
    rc == 0
}

/// Whether sysfs describes `ifname` as a Wi-Fi interface. sysfs shows the network namespace it
/// was mounted in, normally the host's.
pub fn is_wireless(ifname: &str) -> bool {
    if ifname.contains('/') || ifname.starts_with('.') {
        return false;
    }
    let dir = Path::new("/sys/class/net").join(ifname);
    dir.join("wireless").exists() || dir.join("phy80211").exists()
}

fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before being owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// Runs a `SIOCETHTOOL` get command that answers with an `ethtool_value`.
fn ethtool_get(sock: &OwnedFd, ifname: &str, cmd: u32) -> io::Result<u32> {
    let mut value = EthtoolValue { cmd, data: 0 };
    let mut req = super::ifreq_for(ifname)?;
    req.ifr_ifru.ifru_data = (&raw mut value).cast();
    // SAFETY: `req` names the interface and points at `value`, which outlives the call and has
    // the layout the command expects.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}
