//! Network namespaces, veth pairs and bridges for test hosts and the lab.
//!
//! Everything here shells out to `ip` (iproute2) except [`Netns::run_in`], which enters a
//! namespace with `setns(2)` on a fresh thread so that sockets, rings and TUN/TAP devices created
//! by the closure live inside the namespace while the rest of the process stays where it is
//! (a socket keeps the namespace it was created in for its whole life, so the closure may return
//! it to the caller).
//!
//! # Names and leftovers
//!
//! A namespace is named `lp<tag>-<pid>-<seq>`: `tag` says which test or lab made it, `pid` is the
//! creating process and `seq` a per-process counter. [`Netns`] deletes its namespace on drop;
//! when a process crashes or is killed, [`cleanup_leftovers`] deletes every namespace of that
//! shape whose creating process no longer exists (namespaces of live processes are left alone,
//! so concurrent test runs do not disturb each other).
//!
//! # Addresses
//!
//! Test and lab traffic must stay inside the benchmarking and documentation ranges:
//! [`Netns::add_addr`] accepts only 198.18.0.0/15 and fd00::/8 and returns
//! [`NetnsError::AddressOutOfRange`] otherwise.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Where iproute2 keeps the bind mounts of named namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// Per-process counter that makes namespace names unique within one process.
static NEXT_SEQ: AtomicU32 = AtomicU32::new(0);

/// Errors from namespace, veth, bridge and address operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// An `ip` command could not be started (is iproute2 installed?).
    #[error("cannot run `ip {args}` (is iproute2 installed?): {source}")]
    Spawn {
        /// The arguments passed to `ip`.
        args: String,
        /// The error from spawning the process.
        source: io::Error,
    },
    /// An `ip` command ran and failed.
    #[error("`ip {args}` failed: {stderr}")]
    Command {
        /// The arguments passed to `ip`.
        args: String,
        /// What `ip` printed on standard error.
        stderr: String,
    },
    /// A tag or interface name is not acceptable.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An address outside 198.18.0.0/15 and fd00::/8 was requested.
    #[error("address {addr} is outside the test ranges 198.18.0.0/15 and fd00::/8")]
    AddressOutOfRange {
        /// The rejected address.
        addr: IpAddr,
    },
    /// Entering the namespace with `setns(2)` failed.
    #[error("cannot enter network namespace {name}: {source}")]
    Enter {
        /// The namespace name.
        name: String,
        /// The error from `open` or `setns`.
        source: io::Error,
    },
    /// A socket operation of [`ping`] failed.
    #[error("ping {addr}: {source}")]
    Ping {
        /// The pinged address.
        addr: IpAddr,
        /// The socket error.
        source: io::Error,
    },
    /// [`ping`] got no matching echo reply in time.
    #[error("ping {addr}: no echo reply within {timeout:?}")]
    PingTimeout {
        /// The pinged address.
        addr: IpAddr,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Returns whether the process runs with effective user id 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns `true` when the process is root; otherwise prints `<test_name>: skipped: needs root`
/// on stderr (uncaptured, so it shows in every test run) and returns `false`, so a test can `if !require_root("name") { return; }`.
pub fn require_root(test_name: &str) -> bool {
    if is_root() {
        true
    } else {
        // Written straight to stderr: the test harness captures `println!`, and a skip must be
        // visible in every run.
        let line =
            format!("{test_name}: skipped: needs root (network namespaces, AF_PACKET, TUN/TAP)\n");
        let _ = io::Write::write_all(&mut io::stderr(), line.as_bytes());
        false
    }
}

/// Returns whether `addr` lies in 198.18.0.0/15 or fd00::/8, the only ranges tests and the lab
/// may use.
pub fn is_test_addr(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 198 && (o[1] & 0xfe) == 18
        }
        IpAddr::V6(v6) => v6.octets()[0] == 0xfd,
    }
}

/// Runs `ip` with `args` and returns its standard output.
fn ip<S: AsRef<OsStr>>(args: &[S]) -> Result<String, NetnsError> {
    let shown = || {
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            args: shown(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Command {
            args: shown(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn check_ifname(name: &str) -> Result<(), NetnsError> {
    let reason = if name.is_empty() {
        "empty interface name"
    } else if name.len() > MAX_IFNAME {
        "interface names have at most 15 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        "interface names use letters, digits, '-', '_' and '.'"
    } else {
        return Ok(());
    };
    Err(NetnsError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Maps a dotted network sysctl key to its `/proc/sys` path. `/proc/sys/net` shows the
/// namespace of the thread that opens it.
fn sysctl_path(key: &str) -> Result<std::path::PathBuf, NetnsError> {
    let ok = key.starts_with("net.")
        && key
            .split('.')
            .all(|part| !part.is_empty() && !part.contains('/') && part != "..");
    if !ok {
        return Err(NetnsError::InvalidName {
            name: key.to_owned(),
            reason: "sysctl keys here are dotted names under net.",
        });
    }
    Ok(std::path::Path::new("/proc/sys").join(key.replace('.', "/")))
}

/// Parses the creating pid out of a namespace name of the shape `lp<tag>-<pid>-<seq>`.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("lp")?;
    let mut parts = rest.rsplitn(3, '-');
    let seq = parts.next()?;
    let pid = parts.next()?;
    let tag = parts.next()?;
    let tag_ok = !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_alphanumeric());
    let seq_ok = !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit());
    if !tag_ok || !seq_ok {
        return None;
    }
    pid.parse().ok()
}

/// Deletes namespaces named `lp<tag>-<pid>-<seq>` whose creating process is gone, as left behind
/// by crashed or killed runs. Returns the deleted names.
///
/// # Errors
///
/// [`NetnsError::Spawn`] when `ip` cannot run. Failures to delete single namespaces are skipped.
pub fn cleanup_leftovers() -> Result<Vec<String>, NetnsError> {
    let mut removed = Vec::new();
    for name in list_namespaces()? {
        let Some(pid) = creator_pid(&name) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if ip(&["netns", "del", name.as_str()]).is_ok() {
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Lists the names of all named network namespaces (`ip netns list`).
///
/// # Errors
///
/// [`NetnsError`] when `ip` cannot run or fails.
pub fn list_namespaces() -> Result<Vec<String>, NetnsError> {
    let out = ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// A named network namespace, deleted on drop.
///
/// The loopback interface is up from the start.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `lp<tag>-<pid>-<seq>`.
    ///
    /// `tag` is 1 to 8 ASCII letters or digits saying who made it (a test, the lab).
    ///
    /// # Errors
    ///
    /// [`NetnsError::InvalidName`] for a bad tag, [`NetnsError::Spawn`]/[`NetnsError::Command`]
    /// when `ip netns add` fails (usually: not root).
    pub fn create(tag: &str) -> Result<Self, NetnsError> {
        if tag.is_empty() || tag.len() > 8 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(NetnsError::InvalidName {
                name: tag.to_owned(),
                reason: "namespace tags are 1 to 8 ASCII letters or digits",
            });
        }
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("lp{tag}-{}-{seq}", std::process::id());
        ip(&["netns", "add", name.as_str()])?;
        let ns = Self { name };
        ns.set_link_up("lo")?;
        Ok(ns)
    }

    /// The namespace name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that represents the namespace (`/run/netns/<name>`).
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// Runs `ip -n <ns> <args>` and returns its standard output.
    ///
    /// # Errors
    ///
    /// [`NetnsError::Spawn`] or [`NetnsError::Command`].
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut full: Vec<&str> = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Brings interface `ifname` in this namespace up.
    ///
    /// # Errors
    ///
    /// [`NetnsError`] when `ip link set` fails.
    pub fn set_link_up(&self, ifname: &str) -> Result<(), NetnsError> {
        check_ifname(ifname)?;
        self.ip(&["link", "set", ifname, "up"]).map(drop)
    }

    /// Sets the MTU of interface `ifname` in this namespace.
    ///
    /// # Errors
    ///
    /// [`NetnsError`] when `ip link set` fails.
    pub fn set_mtu(&self, ifname: &str, mtu: u32) -> Result<(), NetnsError> {
        check_ifname(ifname)?;
        self.ip(&["link", "set", ifname, "mtu", &mtu.to_string()])
            .map(drop)
    }

    /// Adds `addr/prefix` to interface `ifname`. IPv6 addresses are added with `nodad` so they
    /// are usable at once.
    ///
    /// # Errors
    ///
    /// [`NetnsError::AddressOutOfRange`] unless `addr` is in 198.18.0.0/15 or fd00::/8;
    /// [`NetnsError`] when `ip addr add` fails.
    pub fn add_addr(&self, ifname: &str, addr: IpAddr, prefix: u8) -> Result<(), NetnsError> {
        check_ifname(ifname)?;
        if !is_test_addr(addr) {
            return Err(NetnsError::AddressOutOfRange { addr });
        }
        let cidr = format!("{addr}/{prefix}");
        match addr {
            IpAddr::V4(_) => self.ip(&["addr", "add", &cidr, "dev", ifname]),
            IpAddr::V6(_) => self.ip(&["-6", "addr", "add", &cidr, "dev", ifname, "nodad"]),
        }
        .map(drop)
    }

    /// Sets the MAC address of interface `ifname`.
    ///
    /// # Errors
    ///
    /// [`NetnsError`] when `ip link set` fails.
    pub fn set_mac(&self, ifname: &str, mac: crate::Mac) -> Result<(), NetnsError> {
        check_ifname(ifname)?;
        self.ip(&["link", "set", ifname, "address", &mac.to_string()])
            .map(drop)
    }

    /// Writes `value` to the network sysctl `key` (dotted, e.g. `net.ipv4.ip_forward` or
    /// `net.ipv6.conf.all.disable_ipv6`) inside this namespace.
    ///
    /// # Errors
    ///
    /// [`NetnsError::InvalidName`] for a key outside `net.` or with path characters,
    /// [`NetnsError::Enter`] when the namespace cannot be entered or the write fails.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<(), NetnsError> {
        let path = sysctl_path(key)?;
        self.run_in(|| std::fs::write(&path, value))?
            .map_err(|source| NetnsError::Enter {
                name: format!("{} (writing {key})", self.name),
                source,
            })
    }

    /// Reads the network sysctl `key` inside this namespace (trimmed).
    ///
    /// # Errors
    ///
    /// As [`set_sysctl`](Self::set_sysctl).
    pub fn sysctl(&self, key: &str) -> Result<String, NetnsError> {
        let path = sysctl_path(key)?;
        self.run_in(|| std::fs::read_to_string(&path))?
            .map(|v| v.trim().to_owned())
            .map_err(|source| NetnsError::Enter {
                name: format!("{} (reading {key})", self.name),
                source,
            })
    }

    /// A [`Command`] that runs `program` inside the namespace via `ip netns exec`.
    pub fn command<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `argv` inside the namespace and waits for it (see [`exec`]).
    ///
    /// # Errors
    ///
    /// The error from spawning or waiting, and `InvalidInput` for an empty `argv`.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> io::Result<Output> {
        exec(self, argv)
    }

    /// Starts `argv` inside the namespace (see [`spawn`]).
    ///
    /// # Errors
    ///
    /// The error from spawning, and `InvalidInput` for an empty `argv`.
    pub fn spawn<S: AsRef<OsStr>>(&self, argv: &[S]) -> io::Result<Child> {
        spawn(self, argv)
    }

    /// Runs `f` on a fresh thread that has entered this namespace with `setns(2)` and returns its
    /// result. Sockets, rings and TUN/TAP devices that `f` creates belong to the namespace for
    /// their whole life, so `f` may hand them back to the calling thread.
    ///
    /// # Errors
    ///
    /// [`NetnsError::Enter`] when the namespace cannot be opened or entered.
    ///
    /// # Panics
    ///
    /// A panic in `f` is propagated to the caller.
    pub fn run_in<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let enter_err = |source| NetnsError::Enter {
            name: self.name.clone(),
            source,
        };
        let file = File::open(self.path()).map_err(enter_err)?;
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                // SAFETY: `file` is an open namespace file owned by this closure for the call;
                // setns only changes the namespace of the calling thread, which is this fresh
                // thread and ends when the closure returns.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                drop(file);
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result.map_err(enter_err),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Interfaces inside go with the namespace; a veth whose peer lives elsewhere goes too.
        let _ = ip(&["netns", "del", self.name.as_str()]);
    }
}

fn ns_command<S: AsRef<OsStr>>(ns: &Netns, argv: &[S]) -> io::Result<Command> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command line"))?;
    let mut cmd = ns.command(program);
    cmd.args(args);
    Ok(cmd)
}

/// Runs `argv` inside `ns` via `ip netns exec` and waits for it, capturing its output.
///
/// # Errors
///
/// The error from spawning or waiting, and `InvalidInput` for an empty `argv`.
pub fn exec<S: AsRef<OsStr>>(ns: &Netns, argv: &[S]) -> io::Result<Output> {
    ns_command(ns, argv)?.stdin(Stdio::null()).output()
}

/// Starts `argv` inside `ns` via `ip netns exec`. The caller owns the child (kill it by its
/// handle, wait for it).
///
/// # Errors
///
/// The error from spawning, and `InvalidInput` for an empty `argv`.
pub fn spawn<S: AsRef<OsStr>>(ns: &Netns, argv: &[S]) -> io::Result<Child> {
    ns_command(ns, argv)?.spawn()
}

/// One end of a veth pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethEnd {
    /// Namespace name, or `None` for the namespace of the process.
    pub ns: Option<String>,
    /// Interface name.
    pub name: String,
}

/// A veth pair whose ends may live in two namespaces; deleted on drop (deleting one end deletes
/// both; if a namespace went first the pair is already gone).
#[derive(Debug)]
pub struct Veth {
    a: VethEnd,
    b: VethEnd,
}

impl Veth {
    /// Creates the pair `a_name` (in `a_ns`) <-> `b_name` (in `b_ns`). `None` means the
    /// namespace of the calling process. Both ends are left down.
    ///
    /// # Errors
    ///
    /// [`NetnsError::InvalidName`] for names longer than 15 bytes, [`NetnsError`] when `ip link
    /// add` fails (for example, a name already taken).
    pub fn create(
        a_ns: Option<&Netns>,
        a_name: &str,
        b_ns: Option<&Netns>,
        b_name: &str,
    ) -> Result<Self, NetnsError> {
        check_ifname(a_name)?;
        check_ifname(b_name)?;
        let mut args: Vec<OsString> = Vec::new();
        if let Some(ns) = a_ns {
            args.extend(["-n".into(), ns.name().into()]);
        }
        args.extend(
            [
                "link", "add", a_name, "type", "veth", "peer", "name", b_name,
            ]
            .map(Into::into),
        );
        if let Some(ns) = b_ns {
            args.extend(["netns".into(), ns.name().into()]);
        }
        ip(&args)?;
        Ok(Self {
            a: VethEnd {
                ns: a_ns.map(|n| n.name().to_owned()),
                name: a_name.to_owned(),
            },
            b: VethEnd {
                ns: b_ns.map(|n| n.name().to_owned()),
                name: b_name.to_owned(),
            },
        })
    }

    /// The first end.
    pub fn a(&self) -> &VethEnd {
        &self.a
    }

    /// The second end.
    pub fn b(&self) -> &VethEnd {
        &self.b
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let mut args: Vec<&str> = Vec::new();
        if let Some(ns) = &self.a.ns {
            args.extend(["-n", ns]);
        }
        args.extend(["link", "del", &self.a.name]);
        let _ = ip(&args);
    }
}

/// A Linux bridge inside a namespace; deleted on drop.
#[derive(Debug)]
pub struct Bridge {
    ns: String,
    name: String,
}

impl Bridge {
    /// Creates bridge `name` in `ns` and brings it up. STP is off and the forwarding delay zero,
    /// so ports forward at once.
    ///
    /// When the host has `br_netfilter` loaded, bridged frames would also run the namespace's
    /// iptables hooks, which no LAN switch does and which cost a good share of every frame's
    /// CPU; the namespace's `bridge-nf-call-*` switches are turned off (best effort: they
    /// only exist with the module).
    ///
    /// # Errors
    ///
    /// [`NetnsError`] when `ip link add` fails.
    pub fn create(ns: &Netns, name: &str) -> Result<Self, NetnsError> {
        check_ifname(name)?;
        ns.ip(&[
            "link",
            "add",
            name,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        let bridge = Self {
            ns: ns.name().to_owned(),
            name: name.to_owned(),
        };
        for key in [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ] {
            let _ = ns.set_sysctl(key, "0");
        }
        ns.set_link_up(name)?;
        Ok(bridge)
    }

    /// The bridge interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes `ifname` (in the bridge's namespace) a port of the bridge and brings it up.
    ///
    /// # Errors
    ///
    /// [`NetnsError`] when `ip link set` fails.
    pub fn add_port(&self, ifname: &str) -> Result<(), NetnsError> {
        check_ifname(ifname)?;
        ip(&[
            "-n", &self.ns, "link", "set", ifname, "master", &self.name, "up",
        ])
        .map(drop)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = ip(&["-n", &self.ns, "link", "del", &self.name]);
    }
}

/// Sends one ICMP (or ICMPv6) echo request from inside `ns` to `addr` and waits up to `timeout`
/// for the matching reply. Returns the round-trip time.
///
/// This replaces the `ping` binary, which minimal hosts and CI images often lack.
///
/// # Errors
///
/// [`NetnsError::PingTimeout`] without a reply, [`NetnsError::Ping`] for socket errors,
/// [`NetnsError::Enter`] when the namespace cannot be entered.
pub fn ping(ns: &Netns, addr: IpAddr, timeout: Duration) -> Result<Duration, NetnsError> {
    ns.run_in(|| ping_here(addr, timeout))?
}

fn ping_here(addr: IpAddr, timeout: Duration) -> Result<Duration, NetnsError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| NetnsError::Ping { addr, source };
    let (domain, proto, echo_request, echo_reply) = match addr {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, 8u8, 0u8),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, 128u8, 129u8),
    };
    let sock = Socket::new(domain, Type::RAW, Some(proto)).map_err(err)?;
    // The low 16 bits of the pid plus a counter tell our replies from other pings in flight.
    let ident = (std::process::id() as u16) ^ (NEXT_SEQ.fetch_add(1, Ordering::Relaxed) as u16);
    let seq: u16 = 1;
    let mut req = [0u8; 16];
    req[0] = echo_request;
    req[4..6].copy_from_slice(&ident.to_be_bytes());
    req[6..8].copy_from_slice(&seq.to_be_bytes());
    req[8..16].copy_from_slice(b"softlan!");
    if addr.is_ipv4() {
        // The kernel fills the ICMPv6 checksum itself; ICMPv4 is ours to compute.
        let ck = crate::wire::checksum::internet(&req);
        req[2..4].copy_from_slice(&ck.to_be_bytes());
    }
    let start = Instant::now();
    let dest = SocketAddr::new(addr, 0);
    sock.send_to(&req, &dest.into()).map_err(err)?;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(NetnsError::PingTimeout { addr, timeout });
        }
        sock.set_read_timeout(Some(left)).map_err(err)?;
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(NetnsError::PingTimeout { addr, timeout });
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(err(e)),
        };
        // SAFETY: recv_from initialised the first `n` bytes of `buf`.
        let data: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        // Raw IPv4 sockets deliver the IP header too; raw ICMPv6 sockets do not.
        let icmp = match addr {
            IpAddr::V4(_) => {
                let ihl = usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4;
                data.get(ihl..).unwrap_or(&[])
            }
            IpAddr::V6(_) => data,
        };
        let from_ok = from.as_socket().map(|s| s.ip()) == Some(addr);
        if from_ok
            && icmp.len() >= 8
            && icmp[0] == echo_reply
            && icmp[4..6] == ident.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Ok(start.elapsed());
        }
    }
}

/// Convenience: `198.18.a.b`.
pub fn test_v4(a: u8, b: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, a, b)
}

/// Convenience: `fd00::a:b`.
pub fn test_v6(a: u16, b: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_benchmark_and_ula_addresses_are_test_addresses() {
        assert!(is_test_addr("198.18.0.1".parse().unwrap()));
        assert!(is_test_addr("198.19.255.254".parse().unwrap()));
        assert!(!is_test_addr("198.20.0.1".parse().unwrap()));
        assert!(!is_test_addr("192.168.1.1".parse().unwrap()));
        assert!(is_test_addr("fd00::1".parse().unwrap()));
        assert!(is_test_addr("fdff:1::1".parse().unwrap()));
        assert!(!is_test_addr("fe80::1".parse().unwrap()));
        assert!(!is_test_addr("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn creator_pid_is_parsed_only_from_our_name_shape() {
        assert_eq!(creator_pid("lpveth-1234-0"), Some(1234));
        assert_eq!(creator_pid("lpa1-99-17"), Some(99));
        assert_eq!(creator_pid("lp-1234-0"), None);
        assert_eq!(creator_pid("lpx-abc-0"), None);
        assert_eq!(creator_pid("lpx-12-"), None);
        assert_eq!(creator_pid("other-12-3"), None);
        assert_eq!(creator_pid("lpx_y-12-3"), None);
    }

    #[test]
    fn interface_names_longer_than_fifteen_bytes_are_rejected() {
        assert!(check_ifname("lp0123456789abc").is_ok());
        assert!(check_ifname("lp0123456789abcd").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a b").is_err());
    }
}
