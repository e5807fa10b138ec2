//! The one-machine LAN party: namespaces, bridges and veths that play the party LAN, the
//! Internet, the relay, the gateway and two remote players, plus the measurements and the
//! report that tell whether the room works.
//!
//! # Topology
//!
//! ```text
//!   host1 (eth0 198.18.0.11)   host2 (eth0 198.18.0.12)
//!          \                     /
//!   lan:  bridge "party" 198.18.0.1/24 (the party switch; dnsmasq: DHCP .100-.200)
//!          |            \ (direct variant only)
//!   gw:  lan0 (no IP)    c1/c2: lan0 (DHCP)
//!   gw:  wan0 198.19.0.2
//!          |
//!   net:  bridge "inet" (the Internet, 198.19.0.0/24 and fd00:19::/64)
//!          |                 |                   |
//!   relay: wan0 198.19.0.1   c1: wan0 198.19.0.11   c2: wan0 198.19.0.12
//! ```
//!
//! The Internet is one flat segment (a bridge in its own namespace, `net`) rather than routed
//! hops: every endpoint reaches the relay directly, which is all the tunnel needs, and there is
//! no router whose queues would blur the measurements. Each node is a [`Node`]: its namespace
//! and the names and addresses of its LAN-side and Internet-side interfaces.
//!
//! The party LAN hosts use static addresses with a default route to 198.18.0.1 (the party
//! LAN's "router", which also runs dnsmasq). In the [`Variant::Direct`] baseline each client
//! namespace gets a veth `lan0` straight into the party bridge and takes its address from
//! dnsmasq with the lab's own DHCP client ([`dhcp_request`]); without dnsmasq the lab says how
//! to install it and gives the clients static addresses instead. In [`Variant::Tunnel`] the
//! clients have no LAN veth: [`Lab::start_tunnel`] starts the real `lanparty-relay`,
//! `lanparty-gateway` and two `lanparty-client`s (see [`start_tunnel`]); each client's TAP
//! (c1) or TUN (c2), named [`CLIENT_ADAPTER`], becomes its LAN interface, and its address comes
//! from dnsmasq through the tunnel, asked for by the client itself. The same report then runs
//! unchanged over either variant.
//!
//! IPv6 is on everywhere with duplicate address detection off, so link-local addresses are
//! usable as soon as a link is up. The gateway's `lan0` has IPv6 off: the gateway bridges it
//! and must not speak on it itself.
//!
//! # Lifetime
//!
//! [`Lab`] owns everything it creates: processes are killed by PID first, then bridges, veths
//! and namespaces go, then the lab's temporary directory (logs, lease and pid files,
//! `/tmp/lplab-<pid>-<seq>`). Namespaces are named `lplab<role>-<pid>-<seq>`, so
//! [`cleanup_leftovers`](lanparty_datapath::sys::netns::cleanup_leftovers) removes those of a
//! crashed run, and [`cleanup_lab_leftovers`] also kills the dnsmasq such a run left behind
//! (found through the pid file in the dead run's directory) before the next lab is built.
//! [`Lab::build`] checks a stop flag between its steps so a Ctrl-C handler can end a build
//! early; the drop then cleans up as usual.

mod cli;
mod dhcp;
mod measure;
mod process;
mod report;
mod tunnel;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use lanparty_datapath::sys::netns::{self, Bridge, Netns, NetnsError, Veth};

pub use cli::{LabArgs, run_command};
pub use dhcp::{DNSMASQ_INSTALL_HINT, DhcpLease, Dnsmasq, dhcp_request, dnsmasq_installed, mac_of};
pub use measure::{
    IPERF3_INSTALL_HINT, PingPlan, PingStats, TcpThroughput, UdpRate, addresses, broadcast_reaches,
    ifindex, iperf3_installed, iperf3_server, iperf3_tcp, iperf3_udp, is_link_local_v6,
    link_local_addr, parse_iperf3_tcp, parse_iperf3_udp, ping_stats, wait_for_addr,
};
pub use process::LabProcess;
pub use report::{Check, Report, Status};
pub use tunnel::{
    BUILD_HINT, CLIENT_ADAPTERS, RELAY_METRICS, RELAY_PORT, ROOM, Tunnel, TunnelBinaries,
    TunnelNamespaces, TunnelSettings, relay_status, room_complete, start_tunnel,
    wait_for_client_addr, wait_for_room,
};

/// Name of the party bridge inside the `lan` namespace.
pub const PARTY_BRIDGE: &str = "party";
/// Name of the Internet bridge inside the `net` namespace.
pub const INTERNET_BRIDGE: &str = "inet";
/// The name the tunnelled variant expects for a client's TAP/TUN adapter.
pub const CLIENT_ADAPTER: &str = "lanparty0";
/// The party LAN's router and DHCP server.
pub const LAN_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// First address dnsmasq hands out.
pub const DHCP_FIRST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// Last address dnsmasq hands out.
pub const DHCP_LAST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
/// The relay's Internet address.
pub const RELAY_ADDR: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
/// The relay's Internet IPv6 address.
pub const RELAY_ADDR_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, 1);

/// Prefix of every lab namespace name (`lplab<role>-<pid>-<seq>`).
pub const NAMESPACE_PREFIX: &str = "lplab";
/// Prefix of every lab directory under the temporary directory.
const DIR_PREFIX: &str = "lplab-";

/// Per-process counter for lab directories.
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Errors of the lab and its measurements.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A namespace, veth, bridge or address operation failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// A program the lab needs is not installed.
    #[error("{program} is not installed (install it with `{hint}`)")]
    Missing {
        /// The program.
        program: &'static str,
        /// How to install it.
        hint: &'static str,
    },
    /// Something did not happen in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What we waited for.
        what: String,
        /// How long.
        timeout: Duration,
    },
    /// A program or protocol step failed.
    #[error("{what}: {detail}")]
    Failed {
        /// What failed.
        what: String,
        /// Why (error output, server answer).
        detail: String,
    },
    /// The stop flag was raised (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
    /// Kept for callers that match on it: the lab used to return it before the tunnel programs
    /// were wired in. It no longer returns it; a missing program is
    /// [`ProgramsMissing`](Self::ProgramsMissing).
    #[error("the tunnel programs are not wired into the lab")]
    TunnelNotWired,
    /// Tunnel programs are not built.
    #[error(
        "{programs} not found in {}: build them with `{}` (or point --bin-dir at them); \
         `lanparty-perf lab --direct` runs the baseline without them",
        dir.display(),
        tunnel::BUILD_HINT
    )]
    ProgramsMissing {
        /// Where they were looked for.
        dir: PathBuf,
        /// The missing programs, comma-separated.
        programs: String,
    },
    /// A tunnel program exited or did not get ready.
    #[error("{program} {problem}; the end of its stderr ({}):\n{stderr_tail}", log.display())]
    Program {
        /// The program's name in the lab (`relay`, `gateway`, `c1`, ...).
        program: String,
        /// What went wrong.
        problem: String,
        /// The last lines of its stderr.
        stderr_tail: String,
        /// Its full stderr log.
        log: PathBuf,
    },
    /// No node has this role.
    #[error("no lab node named {0:?}")]
    UnknownNode(String),
}

/// Which LAN party to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Clients plugged straight into the party bridge (the no-tunnel baseline).
    Direct,
    /// Clients reach the party LAN only through relay and gateway (see [`start_tunnel`]).
    Tunnel,
}

impl Variant {
    /// `direct` or `tunnel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Tunnel => "tunnel",
        }
    }
}

/// How to build the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabConfig {
    /// Which variant.
    pub variant: Variant,
    /// Serve DHCP with dnsmasq (when installed). Without it, direct clients get static
    /// addresses.
    pub dhcp: bool,
    /// How long a client may take to get its DHCP lease.
    pub dhcp_timeout: Duration,
}

impl LabConfig {
    /// The direct baseline with DHCP.
    pub fn direct() -> Self {
        Self {
            variant: Variant::Direct,
            dhcp: true,
            dhcp_timeout: Duration::from_secs(10),
        }
    }

    /// The tunnelled variant with DHCP.
    pub fn tunnel() -> Self {
        Self {
            variant: Variant::Tunnel,
            ..Self::direct()
        }
    }
}

/// One namespace of the lab and its interfaces.
#[derive(Debug)]
pub struct Node {
    /// `lan`, `host1`, `host2`, `gw`, `net`, `relay`, `c1` or `c2`.
    pub role: &'static str,
    /// The namespace.
    pub ns: Netns,
    /// Interface on the party LAN, if any (`eth0` on hosts, `lan0` on the gateway and direct
    /// clients, [`CLIENT_ADAPTER`] on tunnelled clients once the client runs).
    pub lan_if: Option<String>,
    /// IPv4 address on the party LAN, once known.
    pub lan_addr: Option<Ipv4Addr>,
    /// Interface on the Internet, if any (`wan0`).
    pub wan_if: Option<String>,
    /// IPv4 address on the Internet.
    pub wan_addr: Option<Ipv4Addr>,
    /// IPv6 address on the Internet.
    pub wan_addr_v6: Option<Ipv6Addr>,
}

impl Node {
    fn new(role: &'static str, tag: &str) -> Result<Self, LabError> {
        let ns = Netns::create(tag)?;
        // Link-local (and our ULA) addresses are usable at once without DAD.
        for key in [
            "net.ipv6.conf.all.accept_dad",
            "net.ipv6.conf.default.accept_dad",
        ] {
            ns.set_sysctl(key, "0")?;
        }
        Ok(Self {
            role,
            ns,
            lan_if: None,
            lan_addr: None,
            wan_if: None,
            wan_addr: None,
            wan_addr_v6: None,
        })
    }

    /// The namespace name (for `ip netns exec NAME ...`).
    pub fn ns_name(&self) -> &str {
        self.ns.name()
    }
}

/// A LAN party on this machine; torn down on drop. See the module docs for the topology.
#[derive(Debug)]
pub struct Lab {
    // Field order is drop order: processes die before their namespaces go.
    processes: Vec<LabProcess>,
    tunnel: Option<Tunnel>,
    dnsmasq: Option<Dnsmasq>,
    bridges: Vec<Bridge>,
    veths: Vec<Veth>,
    nodes: Vec<Node>,
    dir: LabDir,
    variant: Variant,
    notes: Vec<String>,
}

/// The lab's temporary directory, removed on drop.
#[derive(Debug)]
struct LabDir(PathBuf);

impl Drop for LabDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `program arg` can be started.
pub(crate) fn program_installed(program: &str, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Removes what crashed lab runs left behind: kills the dnsmasq of each lab directory whose
/// creating process is gone (only when `/proc/<pid>/cmdline` names that directory, so an
/// unrelated process that reused the PID is left alone), removes those directories, and
/// deletes leftover namespaces (see
/// [`cleanup_leftovers`](lanparty_datapath::sys::netns::cleanup_leftovers)). Returns a line per
/// removed item.
///
/// # Errors
///
/// [`LabError::Netns`] when `ip` cannot run.
pub fn cleanup_lab_leftovers() -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if process::pid_alive(owner) {
            continue;
        }
        let dir = entry.path();
        if let Some(pid) = std::fs::read_to_string(dir.join("dnsmasq.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let ours = String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy());
            if ours {
                process::kill_pid(pid);
                removed.push(format!("dnsmasq pid {pid}"));
            }
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir.display().to_string());
        }
    }
    removed.extend(netns::cleanup_leftovers()?);
    Ok(removed)
}

fn check_stop(stop: &AtomicBool) -> Result<(), LabError> {
    if stop.load(Ordering::Relaxed) {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}

impl Lab {
    /// Builds the lab, reporting each step to `progress` and checking `stop` between steps.
    /// Removes leftovers of crashed runs first.
    ///
    /// # Errors
    ///
    /// [`LabError::Interrupted`] when `stop` was raised; any error of the steps (not root,
    /// iproute2 missing, DHCP timeout). What was built so far is torn down before returning.
    pub fn build(
        config: &LabConfig,
        progress: &mut dyn FnMut(&str),
        stop: &AtomicBool,
    ) -> Result<Self, LabError> {
        let leftovers = cleanup_lab_leftovers()?;
        if !leftovers.is_empty() {
            progress(&format!(
                "removed leftovers of earlier runs: {}",
                leftovers.join(", ")
            ));
        }
        let dir = std::env::temp_dir().join(format!(
            "{DIR_PREFIX}{}-{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let mut lab = Self {
            processes: Vec::new(),
            tunnel: None,
            dnsmasq: None,
            bridges: Vec::new(),
            veths: Vec::new(),
            nodes: Vec::new(),
            dir: LabDir(dir),
            variant: config.variant,
            notes: Vec::new(),
        };
        lab.build_steps(config, progress, stop)?;
        Ok(lab)
    }

    fn idx(&self, role: &str) -> Result<usize, LabError> {
        self.nodes
            .iter()
            .position(|n| n.role == role)
            .ok_or_else(|| LabError::UnknownNode(role.to_owned()))
    }

    /// Creates a veth `a_if` in node `a` <-> `b_if` in node `b` and brings both ends up.
    fn wire(&mut self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<(), LabError> {
        let (ai, bi) = (self.idx(a)?, self.idx(b)?);
        let veth = Veth::create(
            Some(&self.nodes[ai].ns),
            a_if,
            Some(&self.nodes[bi].ns),
            b_if,
        )?;
        self.veths.push(veth);
        self.nodes[ai].ns.set_link_up(a_if)?;
        self.nodes[bi].ns.set_link_up(b_if)?;
        Ok(())
    }

    /// Plugs a new veth `node_if` of `role` into `bridge` (port `port`) of `hub`.
    fn plug(
        &mut self,
        role: &str,
        node_if: &str,
        hub: &str,
        port: &str,
        bridge: usize,
    ) -> Result<(), LabError> {
        self.wire(role, node_if, hub, port)?;
        self.bridges[bridge].add_port(port)?;
        Ok(())
    }

    fn build_steps(
        &mut self,
        config: &LabConfig,
        progress: &mut dyn FnMut(&str),
        stop: &AtomicBool,
    ) -> Result<(), LabError> {
        progress("creating namespaces lan, host1, host2, gw, net, relay, c1, c2");
        for (role, tag) in [
            ("lan", "lablan"),
            ("host1", "labh1"),
            ("host2", "labh2"),
            ("gw", "labgw"),
            ("net", "labnet"),
            ("relay", "labrelay"),
            ("c1", "labc1"),
            ("c2", "labc2"),
        ] {
            check_stop(stop)?;
            self.nodes.push(Node::new(role, tag)?);
        }

        progress("party LAN: bridge \"party\" with router 198.18.0.1, host1 .11, host2 .12");
        let lan = self.idx("lan")?;
        self.bridges
            .push(Bridge::create(&self.nodes[lan].ns, PARTY_BRIDGE)?);
        self.nodes[lan]
            .ns
            .add_addr(PARTY_BRIDGE, IpAddr::V4(LAN_ROUTER), 24)?;
        self.nodes[lan].lan_if = Some(PARTY_BRIDGE.into());
        self.nodes[lan].lan_addr = Some(LAN_ROUTER);
        for (role, port, last) in [("host1", "h1", 11), ("host2", "h2", 12)] {
            check_stop(stop)?;
            self.plug(role, "eth0", "lan", port, 0)?;
            let addr = netns::test_v4(0, last);
            let i = self.idx(role)?;
            let n = &mut self.nodes[i];
            n.ns.add_addr("eth0", IpAddr::V4(addr), 24)?;
            n.ns.ip(&["route", "add", "default", "via", &LAN_ROUTER.to_string()])?;
            // A veth hands its TCP/UDP packets on with the checksum left to "hardware"
            // (CHECKSUM_PARTIAL), and packet sockets on the bridge, such as the gateway's, see
            // them unfinished. Frames from a real NIC always carry their checksum, so the LAN
            // hosts compute theirs in software, as a machine on the wire does.
            if let Err(e) =
                n.ns.exec(&["ethtool", "-K", "eth0", "tx", "off"])
                    .and_then(|o| {
                        if o.status.success() {
                            Ok(())
                        } else {
                            Err(std::io::Error::other(
                                String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                            ))
                        }
                    })
            {
                self.notes.push(format!(
                    "{role}: could not turn off checksum offload on eth0 (ethtool -K eth0 tx \
                     off: {e}); TCP/UDP from the LAN hosts may arrive at tunnelled clients with \
                     bad checksums"
                ));
            }
            n.lan_if = Some("eth0".into());
            n.lan_addr = Some(addr);
        }
        check_stop(stop)?;
        progress("gateway: lan0 into the party bridge (no IP), wan0 198.19.0.2 to the Internet");
        self.plug("gw", "lan0", "lan", "gw", 0)?;
        let gw = self.idx("gw")?;
        self.nodes[gw]
            .ns
            .set_sysctl("net.ipv6.conf.lan0.disable_ipv6", "1")?;
        self.nodes[gw].lan_if = Some("lan0".into());

        check_stop(stop)?;
        progress("Internet: bridge \"inet\" 198.19.0.0/24; relay .1, gw .2, c1 .11, c2 .12");
        let net = self.idx("net")?;
        self.bridges
            .push(Bridge::create(&self.nodes[net].ns, INTERNET_BRIDGE)?);
        for (role, port, last) in [
            ("relay", "relay", 1),
            ("gw", "gw", 2),
            ("c1", "c1", 11),
            ("c2", "c2", 12),
        ] {
            check_stop(stop)?;
            self.plug(role, "wan0", "net", port, 1)?;
            let v4 = Ipv4Addr::new(198, 19, 0, last);
            let v6 = Ipv6Addr::new(0xfd00, 0x19, 0, 0, 0, 0, 0, u16::from(last));
            let i = self.idx(role)?;
            let n = &mut self.nodes[i];
            n.ns.add_addr("wan0", IpAddr::V4(v4), 24)?;
            n.ns.add_addr("wan0", IpAddr::V6(v6), 64)?;
            n.wan_if = Some("wan0".into());
            n.wan_addr = Some(v4);
            n.wan_addr_v6 = Some(v6);
        }

        check_stop(stop)?;
        if config.dhcp && dnsmasq_installed() {
            progress("dnsmasq: DHCP 198.18.0.100-198.18.0.200 on the party bridge");
            self.dnsmasq = Some(Dnsmasq::start(
                &self.nodes[lan].ns,
                PARTY_BRIDGE,
                DHCP_FIRST,
                DHCP_LAST,
                &self.dir.0,
            )?);
        } else if config.dhcp {
            let note = format!(
                "dnsmasq is not installed ({DNSMASQ_INSTALL_HINT}); clients use static addresses"
            );
            progress(&note);
            self.notes.push(note);
        }

        if config.variant == Variant::Direct {
            for (i, role) in ["c1", "c2"].into_iter().enumerate() {
                check_stop(stop)?;
                progress(&format!("{role}: lan0 straight into the party bridge"));
                self.plug(role, "lan0", "lan", role, 0)?;
                let c = self.idx(role)?;
                self.nodes[c].lan_if = Some("lan0".into());
                if self.dnsmasq.is_some() {
                    let lease = self.dhcp(role, config.dhcp_timeout)?;
                    progress(&format!(
                        "{role}: DHCP gave {}/{}",
                        lease.addr, lease.prefix
                    ));
                } else {
                    let addr = netns::test_v4(0, 101 + i as u8);
                    self.nodes[c].ns.add_addr("lan0", IpAddr::V4(addr), 24)?;
                    self.nodes[c].lan_addr = Some(addr);
                }
            }
        }
        progress(&format!("lab is up ({})", self.variant.as_str()));
        Ok(())
    }

    /// Runs the lab's DHCP client on the LAN interface of `role`, adds the leased address to
    /// the interface and waits until it is usable.
    ///
    /// # Errors
    ///
    /// [`LabError::UnknownNode`], [`LabError::Failed`] when the node has no LAN interface, and
    /// the errors of [`dhcp_request`] and [`wait_for_addr`].
    pub fn dhcp(&mut self, role: &str, timeout: Duration) -> Result<DhcpLease, LabError> {
        let i = self.idx(role)?;
        let node = &mut self.nodes[i];
        let ifname = node.lan_if.clone().ok_or_else(|| LabError::Failed {
            what: format!("DHCP on {role}"),
            detail: "the node has no LAN interface".into(),
        })?;
        let lease = dhcp_request(&node.ns, &ifname, timeout)?;
        node.ns
            .add_addr(&ifname, IpAddr::V4(lease.addr), lease.prefix)?;
        wait_for_addr(
            &node.ns,
            &ifname,
            |a| a == IpAddr::V4(lease.addr),
            Duration::from_secs(2),
        )?;
        node.lan_addr = Some(lease.addr);
        Ok(lease)
    }

    /// Waits until the LAN interface of `role` has an IPv4 address (for example, once a
    /// tunnelled client's own DHCP is done), records it as the node's `lan_addr` and returns it.
    ///
    /// # Errors
    ///
    /// [`LabError::UnknownNode`], [`LabError::Failed`] when the node has no LAN interface, and
    /// the errors of [`wait_for_addr`] ([`LabError::Timeout`]).
    pub fn wait_for_lan_addr(
        &mut self,
        role: &str,
        timeout: Duration,
    ) -> Result<Ipv4Addr, LabError> {
        let i = self.idx(role)?;
        let node = &mut self.nodes[i];
        let ifname = node.lan_if.clone().ok_or_else(|| LabError::Failed {
            what: format!("waiting for an address on {role}"),
            detail: "the node has no LAN interface".into(),
        })?;
        let found = wait_for_addr(&node.ns, &ifname, |a| a.is_ipv4(), timeout)?;
        let IpAddr::V4(v4) = found else {
            return Err(LabError::Failed {
                what: format!("waiting for an address on {role}"),
                detail: format!("{found} is not IPv4"),
            });
        };
        node.lan_addr = Some(v4);
        Ok(v4)
    }

    /// The variant this lab was built as.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// Notes about fallbacks taken while building.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The node with `role` (`lan`, `host1`, `host2`, `gw`, `net`, `relay`, `c1`, `c2`).
    ///
    /// # Errors
    ///
    /// [`LabError::UnknownNode`].
    pub fn node(&self, role: &str) -> Result<&Node, LabError> {
        Ok(&self.nodes[self.idx(role)?])
    }

    /// The node with `role`, mutable (the tunnel hook sets a client's `lan_if`).
    ///
    /// # Errors
    ///
    /// [`LabError::UnknownNode`].
    pub fn node_mut(&mut self, role: &str) -> Result<&mut Node, LabError> {
        let i = self.idx(role)?;
        Ok(&mut self.nodes[i])
    }

    /// All nodes, in creation order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The names of all lab namespaces.
    pub fn namespace_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.ns.name().to_owned()).collect()
    }

    /// The lab's directory (program logs, dnsmasq's lease and pid files).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// dnsmasq's PID, when it runs.
    pub fn dnsmasq_pid(&self) -> Option<u32> {
        self.dnsmasq.as_ref().map(Dnsmasq::pid)
    }

    /// Starts `argv` inside the namespace of `role` with output in `<dir>/<name>.out|.err`; the
    /// lab kills it by PID on drop (or earlier with [`stop_process`](Self::stop_process)).
    /// Returns its PID.
    ///
    /// # Errors
    ///
    /// [`LabError::UnknownNode`] and the errors of [`LabProcess::spawn`].
    pub fn spawn(&mut self, role: &str, name: &str, argv: &[&str]) -> Result<u32, LabError> {
        let i = self.idx(role)?;
        let p = LabProcess::spawn(&self.nodes[i].ns, name, argv, &self.dir.0)?;
        let pid = p.pid();
        self.processes.push(p);
        Ok(pid)
    }

    /// The process with `pid` started through this lab.
    pub fn process(&mut self, pid: u32) -> Option<&mut LabProcess> {
        self.processes.iter_mut().find(|p| p.pid() == pid)
    }

    /// Kills the process with `pid` started through this lab. Returns whether there was one.
    pub fn stop_process(&mut self, pid: u32) -> bool {
        let before = self.processes.len();
        self.processes.retain(|p| p.pid() != pid);
        before != self.processes.len()
    }

    /// Starts the relay, gateway and clients of the tunnelled variant with the default
    /// [`TunnelSettings`] and no progress lines (see [`start_tunnel_with`](Self::start_tunnel_with)).
    ///
    /// # Errors
    ///
    /// As [`start_tunnel_with`](Self::start_tunnel_with).
    pub fn start_tunnel(&mut self, bins: &TunnelBinaries) -> Result<(), LabError> {
        self.start_tunnel_with(bins, &TunnelSettings::default(), &mut |_| {})
    }

    /// Starts the relay, gateway and clients of the tunnelled variant through [`start_tunnel`]
    /// and keeps them (killed by PID on drop); points each client's `lan_if` at
    /// [`CLIENT_ADAPTER`] and records the address it got by DHCP through the tunnel as its
    /// `lan_addr`.
    ///
    /// # Errors
    ///
    /// Those of [`start_tunnel`]; [`LabError::Failed`] when the tunnel already runs.
    pub fn start_tunnel_with(
        &mut self,
        bins: &TunnelBinaries,
        settings: &TunnelSettings,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), LabError> {
        if self.tunnel.is_some() {
            return Err(LabError::Failed {
                what: "starting the tunnel".into(),
                detail: "it already runs".into(),
            });
        }
        let tunnel = {
            let nets = TunnelNamespaces {
                relay: self.node("relay")?,
                gateway: self.node("gw")?,
                clients: [self.node("c1")?, self.node("c2")?],
                log_dir: &self.dir.0,
            };
            start_tunnel(bins, &nets, settings, progress)?
        };
        self.tunnel = Some(tunnel);
        for role in ["c1", "c2"] {
            self.node_mut(role)?.lan_if = Some(CLIENT_ADAPTER.into());
            self.wait_for_lan_addr(role, Duration::from_secs(1))?;
        }
        Ok(())
    }

    /// The running tunnel programs, once [`start_tunnel`](Self::start_tunnel) succeeded.
    pub fn tunnel(&mut self) -> Option<&mut Tunnel> {
        self.tunnel.as_mut()
    }

    /// The relay's `/status` (see [`relay_status`]).
    ///
    /// # Errors
    ///
    /// Those of [`relay_status`].
    pub fn relay_status(&self) -> Result<lanparty_relay::status::StatusReport, LabError> {
        relay_status(&self.node("relay")?.ns)
    }

    /// Kills the relay by PID and starts it again with the same state directory (see
    /// [`Tunnel::restart_relay`]).
    ///
    /// # Errors
    ///
    /// Those of [`Tunnel::restart_relay`].
    pub fn restart_relay(&mut self) -> Result<(), LabError> {
        let relay = self.idx("relay")?;
        let tunnel = tunnel_or_err(&mut self.tunnel, "restarting the relay")?;
        tunnel.restart_relay(&self.nodes[relay], &self.dir.0)
    }

    /// Waits until the relay lists the gateway and both clients in its room again, failing
    /// early when one of the programs exits.
    ///
    /// # Errors
    ///
    /// Those of [`wait_for_room`].
    pub fn wait_for_room(
        &mut self,
        timeout: Duration,
    ) -> Result<lanparty_relay::status::StatusReport, LabError> {
        let relay = self.idx("relay")?;
        let tunnel = tunnel_or_err(&mut self.tunnel, "waiting for the room")?;
        let mut procs: Vec<&mut LabProcess> = Vec::new();
        let (clients, gateway, relay_p) = tunnel.processes_mut();
        procs.push(relay_p);
        procs.push(gateway);
        procs.extend(clients);
        wait_for_room(&self.nodes[relay].ns, &["c1", "c2"], &mut procs, timeout)
    }

    /// Runs every check of the report (see [`ReportOptions`]), reporting progress and stopping
    /// early (the remaining checks are not run) when `stop` is raised.
    pub fn report(
        &self,
        opts: &ReportOptions,
        progress: &mut dyn FnMut(&str),
        stop: &AtomicBool,
    ) -> Report {
        let mut report = Report::new(self.variant.as_str());
        report.notes.clone_from(&self.notes);
        for role in ["c1", "c2"] {
            if stop.load(Ordering::Relaxed) {
                report
                    .notes
                    .push("interrupted: some checks did not run".into());
                break;
            }
            progress(&format!("checking {role}"));
            self.check_client(role, opts, &mut report, stop);
        }
        report
    }

    fn check_client(
        &self,
        role: &str,
        opts: &ReportOptions,
        report: &mut Report,
        stop: &AtomicBool,
    ) {
        let to = "host1";
        let path = format!("{role} -> {to}");
        let back = format!("{to} -> {role}");
        let (Ok(c), Ok(h)) = (self.node(role), self.node(to)) else {
            return;
        };
        let (Some(c_if), Some(h_if), Some(h_addr)) =
            (c.lan_if.clone(), h.lan_if.clone(), h.lan_addr)
        else {
            report.checks.push(Check::skipped(
                "LAN interface",
                role,
                "the client has no LAN interface (tunnel not running)",
            ));
            return;
        };
        // DHCP address.
        report
            .checks
            .push(match (c.lan_addr, self.dnsmasq.is_some()) {
                (Some(a), true) => {
                    // The lease file is dnsmasq's own word that it handed the address out.
                    let leases = self
                        .dnsmasq
                        .as_ref()
                        .and_then(|d| std::fs::read_to_string(d.lease_file()).ok())
                        .unwrap_or_default();
                    let via = match self.variant {
                        Variant::Direct => "",
                        Variant::Tunnel => " through the tunnel",
                    };
                    if leases.contains(&format!(" {a} ")) {
                        Check::pass("DHCP address", role, format!("{a}/24 from dnsmasq{via}"))
                    } else {
                        Check::fail(
                            "DHCP address",
                            role,
                            format!("{a}/24 is not among dnsmasq's leases"),
                        )
                    }
                }
                (Some(a), false) => Check::skipped(
                    "DHCP address",
                    role,
                    format!("static {a}/24: dnsmasq not running"),
                ),
                (None, _) => Check::fail("DHCP address", role, "no IPv4 address on the LAN"),
            });
        // Ping RTT.
        report.checks.push(
            match ping_stats(&c.ns, IpAddr::V4(h_addr), None, &opts.ping) {
                Ok(s) => ping_check("ping RTT", &path, &s),
                Err(e) => Check::fail("ping RTT", &path, e.to_string()),
            },
        );
        // Broadcast each way.
        let wait = Duration::from_secs(2);
        for (from, from_if, dest, label) in [(c, &c_if, h, &path), (h, &h_if, c, &back)] {
            report.checks.push(
                match broadcast_reaches(&from.ns, from_if, &dest.ns, opts.broadcast_port, wait) {
                    Ok(Some(src)) => Check::pass(
                        "broadcast",
                        label,
                        format!(
                            "255.255.255.255:{} received from {src}",
                            opts.broadcast_port
                        ),
                    ),
                    Ok(None) => Check::fail(
                        "broadcast",
                        label,
                        format!("nothing received within {wait:?}"),
                    ),
                    Err(e) => Check::fail("broadcast", label, e.to_string()),
                },
            );
        }
        // IPv6 link-local.
        let ll = link_local_addr(&h.ns, &h_if, Duration::from_secs(3)).and_then(|addr| {
            ping_stats(
                &c.ns,
                IpAddr::V6(addr),
                Some(&c_if),
                &PingPlan {
                    count: 5,
                    ..opts.ping
                },
            )
            .map(|s| (addr, s))
        });
        report.checks.push(match ll {
            Ok((addr, s)) if s.received > 0 => Check::pass(
                "IPv6 link-local",
                &path,
                format!(
                    "ping {addr}%{c_if}: {}/{} replies, median {:.3} ms",
                    s.received,
                    s.sent,
                    s.median_us.unwrap_or(0.0) / 1e3
                ),
            ),
            Ok((addr, s)) => Check::fail(
                "IPv6 link-local",
                &path,
                format!("ping {addr}%{c_if}: 0/{} replies", s.sent),
            ),
            Err(e) => Check::fail("IPv6 link-local", &path, e.to_string()),
        });
        // Throughput.
        if opts.iperf_secs == 0 || stop.load(Ordering::Relaxed) {
            return;
        }
        if !iperf3_installed() {
            report.checks.push(Check::skipped(
                "TCP throughput",
                &path,
                format!("iperf3 is not installed ({IPERF3_INSTALL_HINT})"),
            ));
            return;
        }
        let dir = self.dir.0.clone();
        report.checks.push(
            match iperf3_tcp(&c.ns, &h.ns, IpAddr::V4(h_addr), opts.iperf_secs, &dir) {
                Ok(t) => Check::pass(
                    "TCP throughput",
                    &path,
                    format!(
                        "{:.2} Gbit/s over {:.1} s, {} retransmits",
                        t.received_bps / 1e9,
                        t.seconds,
                        t.retransmits
                    ),
                )
                .with_value(t.received_bps / 1e9, "Gbit/s"),
                Err(e) => Check::fail("TCP throughput", &path, e.to_string()),
            },
        );
        if opts.udp_rates {
            for payload in [64, 1400] {
                let name = format!("UDP {payload} B rate");
                report.checks.push(
                    match iperf3_udp(
                        &c.ns,
                        &h.ns,
                        IpAddr::V4(h_addr),
                        payload,
                        opts.udp_rate_bps,
                        opts.iperf_secs,
                        &dir,
                    ) {
                        Ok(r) => Check::pass(
                            &name,
                            &path,
                            format!(
                                "{:.0} packets/s arrived, {} of {} lost",
                                r.received_pps, r.lost, r.packets
                            ),
                        )
                        .with_value(r.received_pps, "pps"),
                        Err(e) => Check::fail(&name, &path, e.to_string()),
                    },
                );
            }
        }
    }
}

fn tunnel_or_err<'a>(
    tunnel: &'a mut Option<Tunnel>,
    what: &str,
) -> Result<&'a mut Tunnel, LabError> {
    tunnel.as_mut().ok_or_else(|| LabError::Failed {
        what: what.to_owned(),
        detail: "the tunnel does not run (start_tunnel first)".into(),
    })
}

fn ping_check(check: &str, path: &str, s: &PingStats) -> Check {
    match (s.median_us, s.p99_us) {
        (Some(median), Some(p99)) => Check::pass(
            check,
            path,
            format!(
                "median {:.3} ms, p99 {:.3} ms, {}/{} replies",
                median / 1e3,
                p99 / 1e3,
                s.received,
                s.sent
            ),
        )
        .with_value(median / 1e3, "ms"),
        _ => Check::fail(check, path, format!("no replies to {} pings", s.sent)),
    }
}

/// What [`Lab::report`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportOptions {
    /// The ping runs.
    pub ping: PingPlan,
    /// UDP port of the broadcast checks.
    pub broadcast_port: u16,
    /// Length of each iperf3 run in seconds; 0 skips throughput.
    pub iperf_secs: u32,
    /// Also measure UDP packet rates at 64 and 1400 bytes.
    pub udp_rates: bool,
    /// Offered load of the UDP runs (`iperf3 -b`), bits per second.
    pub udp_rate_bps: u64,
}

impl Default for ReportOptions {
    /// 50 pings, broadcast port 47_624, 3-second iperf3 runs, UDP rates at 1 Gbit/s offered.
    fn default() -> Self {
        Self {
            ping: PingPlan::default(),
            broadcast_port: 47_624,
            iperf_secs: 3,
            udp_rates: true,
            udp_rate_bps: 1_000_000_000,
        }
    }
}
