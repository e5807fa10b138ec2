//! The party LAN's DHCP: dnsmasq as the server, and a small DHCPv4 client of our own.
//!
//! The client is ours (dhcproto over a UDP socket bound to the interface inside the namespace)
//! rather than dhclient or udhcpc: those run scripts that rewrite `/etc/resolv.conf`, which
//! namespaces share with the host, and they are not installed on minimal images. It performs
//! one DISCOVER/OFFER/REQUEST/ACK exchange with the broadcast flag set, so the server's replies
//! reach an interface that has no address yet, and does not renew (labs live for minutes).

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dhcproto::v4;
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use lanparty_datapath::sys::netns::Netns;

use super::LabError;
use super::process::LabProcess;

/// What to tell a user whose machine lacks dnsmasq.
pub const DNSMASQ_INSTALL_HINT: &str = "apt-get install dnsmasq";

/// Whether the `dnsmasq` program can be started.
pub fn dnsmasq_installed() -> bool {
    super::program_installed("dnsmasq", "--version")
}

/// A dnsmasq serving DHCP (no DNS) on one interface of a namespace, killed by PID on drop.
///
/// Its lease file, pid file and log live in the lab's directory.
#[derive(Debug)]
pub struct Dnsmasq {
    process: LabProcess,
    leases: PathBuf,
}

impl Dnsmasq {
    /// Starts dnsmasq in `ns` serving `first..=last` (a /24) on `ifname`, which must already carry
    /// an address in that subnet (dnsmasq hands it out as router), and waits up to 5 s until it
    /// has written its pid file.
    ///
    /// # Errors
    ///
    /// [`LabError::Missing`] when dnsmasq is not installed; [`LabError::Failed`] when it exits
    /// at start (its error output is in the message); [`LabError::Timeout`].
    pub fn start(
        ns: &Netns,
        ifname: &str,
        first: Ipv4Addr,
        last: Ipv4Addr,
        dir: &Path,
    ) -> Result<Self, LabError> {
        if !dnsmasq_installed() {
            return Err(LabError::Missing {
                program: "dnsmasq",
                hint: DNSMASQ_INSTALL_HINT,
            });
        }
        let leases = dir.join("dnsmasq.leases");
        let pid_file = dir.join("dnsmasq.pid");
        let argv = [
            "dnsmasq".to_owned(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            // DHCP only: port 0 turns the DNS server off.
            "--port=0".into(),
            format!("--interface={ifname}"),
            "--bind-interfaces".into(),
            format!("--dhcp-range={first},{last},255.255.255.0,1h"),
            "--dhcp-authoritative".into(),
            // dnsmasq pings an address before offering it; on a fresh lab that only costs time.
            "--no-ping".into(),
            // Stay root so that the lease and pid files in our root-owned directory stay
            // writable.
            "--user=root".into(),
            format!("--dhcp-leasefile={}", leases.display()),
            format!("--pid-file={}", pid_file.display()),
            "--log-facility=-".into(),
            "--log-dhcp".into(),
        ];
        let mut process = LabProcess::spawn(ns, "dnsmasq", &argv, dir)?;
        let timeout = Duration::from_secs(5);
        let deadline = Instant::now() + timeout;
        loop {
            if !process.is_running() {
                return Err(LabError::Failed {
                    what: "starting dnsmasq".into(),
                    detail: process.stderr_tail(),
                });
            }
            if std::fs::read_to_string(&pid_file).is_ok_and(|s| !s.trim().is_empty()) {
                return Ok(Self { process, leases });
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: "dnsmasq to write its pid file".into(),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// dnsmasq's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The lease file.
    pub fn lease_file(&self) -> &Path {
        &self.leases
    }

    /// The process (log paths, liveness).
    pub fn process(&mut self) -> &mut LabProcess {
        &mut self.process
    }
}

/// An address obtained with [`dhcp_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DhcpLease {
    /// The leased address.
    pub addr: Ipv4Addr,
    /// Prefix length from the subnet mask option (24 when the server sent none).
    pub prefix: u8,
    /// The first router option, if any.
    pub router: Option<Ipv4Addr>,
    /// The server identifier.
    pub server: Ipv4Addr,
    /// Lease time in seconds, if the server sent one.
    pub lease_secs: Option<u32>,
}

/// Reads the MAC address of `ifname` in `ns` (from `ip -o link show`).
///
/// # Errors
///
/// [`LabError::Netns`] when `ip` fails, [`LabError::Failed`] when there is no Ethernet address.
pub fn mac_of(ns: &Netns, ifname: &str) -> Result<[u8; 6], LabError> {
    let out = ns.ip(&["-o", "link", "show", "dev", ifname])?;
    let parsed = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .and_then(parse_mac);
    parsed.ok_or_else(|| LabError::Failed {
        what: format!("reading the MAC address of {ifname}"),
        detail: out.trim().to_owned(),
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Asks for an address on `ifname` inside `ns` with one DHCPv4 exchange (broadcast flag set),
/// retrying every 500 ms until `timeout`. Does not configure the address (see
/// [`Lab::dhcp`](super::Lab::dhcp)).
///
/// # Errors
///
/// [`LabError::Timeout`] without an ACK in time, [`LabError::Failed`] on a NAK,
/// [`LabError::Io`] for socket errors, [`LabError::Netns`] when the namespace cannot be entered.
pub fn dhcp_request(ns: &Netns, ifname: &str, timeout: Duration) -> Result<DhcpLease, LabError> {
    let mac = mac_of(ns, ifname)?;
    ns.run_in(|| exchange(ifname, mac, timeout))?
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> LabError {
    move |source| LabError::Io {
        what: what.into(),
        source,
    }
}

fn client_socket(ifname: &str) -> Result<UdpSocket, LabError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = io_err("dhcp client socket");
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(&err)?;
    sock.set_reuse_address(true).map_err(&err)?;
    sock.set_broadcast(true).map_err(&err)?;
    // Bound to the device, a datagram to 255.255.255.255 leaves through it even without a route
    // or an address (source 0.0.0.0, as DHCP wants).
    sock.bind_device(Some(ifname.as_bytes())).map_err(&err)?;
    sock.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())
        .map_err(&err)?;
    Ok(sock.into())
}

fn request_message(xid: u32, mac: &[u8; 6], kind: v4::MessageType) -> v4::Message {
    let unspec = Ipv4Addr::UNSPECIFIED;
    let mut msg = v4::Message::new_with_id(xid, unspec, unspec, unspec, unspec, mac);
    msg.set_flags(v4::Flags::default().set_broadcast());
    msg.opts_mut().insert(v4::DhcpOption::MessageType(kind));
    msg.opts_mut()
        .insert(v4::DhcpOption::ParameterRequestList(vec![
            v4::OptionCode::SubnetMask,
            v4::OptionCode::Router,
        ]));
    msg
}

fn send(sock: &UdpSocket, msg: &v4::Message) -> Result<(), LabError> {
    let mut buf = Vec::with_capacity(300);
    msg.encode(&mut Encoder::new(&mut buf))
        .map_err(|e| LabError::Failed {
            what: "encoding a DHCP message".into(),
            detail: e.to_string(),
        })?;
    sock.send_to(&buf, (Ipv4Addr::BROADCAST, 67))
        .map_err(io_err("sending a DHCP message"))?;
    Ok(())
}

/// Waits until `until` for a reply to `xid`/`mac` of one of `kinds`.
fn receive(
    sock: &UdpSocket,
    xid: u32,
    mac: &[u8; 6],
    until: Instant,
) -> Result<Option<v4::Message>, LabError> {
    let mut buf = [0u8; 1500];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        sock.set_read_timeout(Some(left))
            .map_err(io_err("dhcp socket timeout"))?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(None);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("receiving a DHCP reply")(e)),
        };
        let Ok(msg) = v4::Message::decode(&mut Decoder::new(&buf[..n])) else {
            continue;
        };
        if msg.opcode() == v4::Opcode::BootReply
            && msg.xid() == xid
            && msg.chaddr().get(..6) == Some(&mac[..])
        {
            return Ok(Some(msg));
        }
    }
}

fn exchange(ifname: &str, mac: [u8; 6], timeout: Duration) -> Result<DhcpLease, LabError> {
    let sock = client_socket(ifname)?;
    let start = Instant::now();
    let deadline = start + timeout;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let xid =
        std::process::id().rotate_left(16) ^ nanos ^ u32::from_be_bytes([0, 0, mac[4], mac[5]]);
    let retry = Duration::from_millis(500);
    let timed_out = || LabError::Timeout {
        what: format!("a DHCP lease on {ifname}"),
        timeout,
    };
    // DISCOVER until an OFFER arrives.
    let offer = loop {
        if Instant::now() >= deadline {
            return Err(timed_out());
        }
        send(
            &sock,
            &request_message(xid, &mac, v4::MessageType::Discover),
        )?;
        let until = (Instant::now() + retry).min(deadline);
        if let Some(m) = receive(&sock, xid, &mac, until)?
            && m.opts().has_msg_type(v4::MessageType::Offer)
        {
            break m;
        }
    };
    let server = match offer.opts().get(v4::OptionCode::ServerIdentifier) {
        Some(v4::DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => offer.siaddr(),
    };
    let mut request = request_message(xid, &mac, v4::MessageType::Request);
    request
        .opts_mut()
        .insert(v4::DhcpOption::RequestedIpAddress(offer.yiaddr()));
    request
        .opts_mut()
        .insert(v4::DhcpOption::ServerIdentifier(server));
    // REQUEST until an ACK (or a NAK) arrives.
    let ack = loop {
        if Instant::now() >= deadline {
            return Err(timed_out());
        }
        send(&sock, &request)?;
        let until = (Instant::now() + retry).min(deadline);
        let Some(m) = receive(&sock, xid, &mac, until)? else {
            continue;
        };
        if m.opts().has_msg_type(v4::MessageType::Nak) {
            return Err(LabError::Failed {
                what: format!("DHCP on {ifname}"),
                detail: format!("server {server} refused {} (NAK)", offer.yiaddr()),
            });
        }
        if m.opts().has_msg_type(v4::MessageType::Ack) {
            break m;
        }
    };
    let prefix = match ack.opts().get(v4::OptionCode::SubnetMask) {
        Some(v4::DhcpOption::SubnetMask(mask)) => u32::from(*mask).count_ones() as u8,
        _ => 24,
    };
    let router = match ack.opts().get(v4::OptionCode::Router) {
        Some(v4::DhcpOption::Router(list)) => list.first().copied(),
        _ => None,
    };
    let lease_secs = match ack.opts().get(v4::OptionCode::AddressLeaseTime) {
        Some(v4::DhcpOption::AddressLeaseTime(secs)) => Some(*secs),
        _ => None,
    };
    Ok(DhcpLease {
        addr: ack.yiaddr(),
        prefix,
        router,
        server,
        lease_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_parse_only_with_six_hex_bytes() {
        assert_eq!(
            parse_mac("02:00:5e:10:00:01"),
            Some([2, 0, 0x5e, 0x10, 0, 1])
        );
        assert_eq!(parse_mac("02:00:5e:10:00"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:5e:10:00:01"), None);
    }

    #[test]
    fn requests_ask_for_a_broadcast_reply() {
        let msg = request_message(7, &[2, 0, 0, 0, 0, 1], v4::MessageType::Discover);
        assert!(msg.flags().broadcast());
        assert!(msg.opts().has_msg_type(v4::MessageType::Discover));
        assert_eq!(msg.chaddr(), &[2, 0, 0, 0, 0, 1]);
    }
}
