//! End-to-end acceptance: the real `lanparty-relay`, `lanparty-gateway` and two
//! `lanparty-client`s (c1 on a TAP, c2 on a TUN) in the one-machine lab, and what a LAN party
//! needs from them: DHCP from the party LAN's dnsmasq through the tunnel, ARP and ping, broadcast
//! both ways and between players, IPv6 link-local, full-size datagrams, IPX, recovery from a
//! relay restart, and the relay's filters against a misbehaving player.
//!
//! Needs root and dnsmasq; skips clearly without them. The programs are taken from the target
//! directory this test runs from (`deps/..`), or from `$LANPARTY_BIN_DIR`; when they are missing
//! the test builds them once into that directory with `cargo build -p lanparty-relay -p
//! lanparty-gateway -p lanparty-client-win` (bounded in time) and skips, saying so, if that
//! fails.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use lanparty_datapath::sys::afpacket::{PacketSocket, SocketConfig};
use lanparty_datapath::sys::netns::{Netns, require_root};
use lanparty_perf::lab::{
    CLIENT_ADAPTER, DHCP_FIRST, DHCP_LAST, Lab, LabConfig, PingPlan, ROOM, ReportOptions,
    TunnelBinaries, TunnelSettings, broadcast_reaches, dnsmasq_installed, link_local_addr, mac_of,
    ping_stats,
};

/// One lab at a time: they share the machine's two cores with everything else.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long building the programs may take when they are missing.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The target directory this test binary lives in (`target/debug/deps/..`).
fn target_profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    Some(deps.parent()?.to_path_buf())
}

/// The programs, built if needed; `Err` says why the test skips.
fn binaries() -> Result<TunnelBinaries, String> {
    static FOUND: OnceLock<Result<TunnelBinaries, String>> = OnceLock::new();
    FOUND.get_or_init(find_or_build).clone()
}

fn find_or_build() -> Result<TunnelBinaries, String> {
    if let Some(dir) = std::env::var_os("LANPARTY_BIN_DIR") {
        let bins = TunnelBinaries::in_dir(Path::new(&dir));
        return bins.check().map(|()| bins).map_err(|e| e.to_string());
    }
    let dir = target_profile_dir().ok_or("cannot tell where the test binary lives")?;
    let bins = TunnelBinaries::in_dir(&dir);
    if bins.check().is_ok() {
        return Ok(bins);
    }
    // cargo releases the build directory's lock while tests run, so building into the same
    // target directory works and reuses what is already compiled.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace directory")?;
    let target = dir.parent().ok_or("no target directory")?;
    let release = dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "e2e: the programs are missing in {}; building them (at most {BUILD_TIMEOUT:?})",
        dir.display(),
    );
    let log = target.join("e2e-programs-build.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(cargo)
        .args([
            "build",
            "-p",
            "lanparty-relay",
            "-p",
            "lanparty-gateway",
            "-p",
            "lanparty-client-win",
            "--target-dir",
        ])
        .arg(target)
        .args(release.then_some("--release"))
        .current_dir(workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "building the programs took longer than {BUILD_TIMEOUT:?}"
                ));
            }
        }
    };
    if !status.success() {
        return Err(format!(
            "`cargo build -p lanparty-relay -p lanparty-gateway -p lanparty-client-win` failed \
             ({status}); see {}",
            log.display()
        ));
    }
    bins.check().map(|()| bins).map_err(|e| e.to_string())
}

/// A tunnelled lab with every program joined and both clients addressed, or `None` (with a
/// skip line) without root, dnsmasq or the programs.
fn tunnel_lab(test: &str, settings: &TunnelSettings) -> Option<(MutexGuard<'static, ()>, Lab)> {
    if !require_root(test) {
        return None;
    }
    if !dnsmasq_installed() {
        eprintln!("{test}: skipped: dnsmasq is not installed (apt-get install dnsmasq)");
        return None;
    }
    let bins = match binaries() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("{test}: skipped: {why}");
            return None;
        }
    };
    let guard = serial();
    let stop = AtomicBool::new(false);
    let mut lab = Lab::build(&LabConfig::tunnel(), &mut |_| {}, &stop)
        .unwrap_or_else(|e| panic!("the tunnel lab comes up: {e}"));
    if let Err(e) = lab.start_tunnel_with(&bins, settings, &mut |l| eprintln!("{test}: {l}")) {
        panic!("relay, gateway and clients come up: {e}");
    }
    Some((guard, lab))
}

fn quick_ping() -> PingPlan {
    PingPlan {
        count: 10,
        budget: Duration::from_secs(10),
        ..PingPlan::default()
    }
}

fn host1(lab: &Lab) -> (&Netns, Ipv4Addr) {
    let h = lab.node("host1").unwrap();
    (&h.ns, h.lan_addr.unwrap())
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The MAC the relay admitted the client of `role` with.
fn admitted_mac(lab: &Lab, role: &str) -> String {
    let status = lab.relay_status().unwrap();
    let room = status.room(ROOM).expect("the room exists");
    room.peers
        .iter()
        .find(|p| p.role == "client" && p.name == role)
        .unwrap_or_else(|| panic!("{role} is in the room: {:?}", room.peers))
        .mac
        .to_ascii_lowercase()
}

fn drops(lab: &Lab, reason: &str) -> u64 {
    let status = lab.relay_status().unwrap();
    status
        .room(ROOM)
        .and_then(|r| r.drops.get(reason).copied())
        .unwrap_or(0)
}

/// An AF_PACKET socket on `ifname` inside `ns`.
fn packet_socket(ns: &Netns, ifname: &str) -> PacketSocket {
    ns.run_in(|| PacketSocket::open(ifname, &SocketConfig::default()))
        .unwrap()
        .unwrap_or_else(|e| panic!("packet socket on {ifname}: {e}"))
}

/// Waits up to `timeout` for a frame that `wanted` accepts; returns a copy.
fn receive_frame(
    sock: &mut PacketSocket,
    timeout: Duration,
    wanted: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if !sock.wait_rx(left).unwrap() {
            continue;
        }
        sock.recv_batch().unwrap();
        if let Some(f) = sock.frames().find(|f| wanted(f)) {
            return Some(f.to_vec());
        }
    }
}

/// An Ethernet frame with `payload` after the EtherType.
fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP packet (UDP checksum 0, which IPv4 allows).
fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0]);
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = ipv4_checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

/// A frame from `src` (MAC and address) to the broadcast MAC and 255.255.255.255.
fn udp_broadcast_frame(
    src_mac: [u8; 6],
    src: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    ethernet(
        [0xff; 6],
        src_mac,
        0x0800,
        &ipv4_udp(src, Ipv4Addr::BROADCAST, sport, dport, payload),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn tap_and_tun_clients_get_their_addresses_from_the_party_lans_dhcp_server() {
    let test = "tap_and_tun_clients_get_their_addresses_from_the_party_lans_dhcp_server";
    let Some((_serial, mut lab)) = tunnel_lab(test, &TunnelSettings::default()) else {
        return;
    };
    let leases = std::fs::read_to_string(lab.dir().join("dnsmasq.leases")).unwrap();
    let mut seen = Vec::new();
    for role in ["c1", "c2"] {
        let node = lab.node(role).unwrap();
        assert_eq!(node.lan_if.as_deref(), Some(CLIENT_ADAPTER));
        let addr = node.lan_addr.expect("the client has an address");
        assert!(
            (DHCP_FIRST..=DHCP_LAST).contains(&addr),
            "{role}: {addr} is outside dnsmasq's range"
        );
        // dnsmasq leased it to the MAC the relay admitted the client with.
        let mac = admitted_mac(&lab, role);
        let lease = leases
            .lines()
            .find(|l| l.contains(&format!(" {addr} ")))
            .unwrap_or_else(|| panic!("no lease for {addr}: {leases}"));
        assert!(
            lease.contains(&mac),
            "{role}: lease {lease:?}, admitted MAC {mac}"
        );
        seen.push(addr);
    }
    assert_ne!(seen[0], seen[1]);
    // The TAP carries the admitted MAC itself; the TUN has none (the client emulates it).
    let c1 = lab.node("c1").unwrap();
    assert_eq!(
        mac_text(mac_of(&c1.ns, CLIENT_ADAPTER).unwrap()),
        admitted_mac(&lab, "c1")
    );
    let c2 = lab.node("c2").unwrap();
    assert!(
        mac_of(&c2.ns, CLIENT_ADAPTER).is_err(),
        "a TUN has no Ethernet address"
    );
    // Each client says so on its status line.
    let tunnel = lab.tunnel().unwrap();
    for role in ["c1", "c2"] {
        let err = std::fs::read_to_string(tunnel.client(role).unwrap().stderr_path()).unwrap();
        assert!(
            err.contains("from the LAN's DHCP server"),
            "{role}'s status: {err}"
        );
    }
}

#[test]
fn clients_resolve_and_ping_a_lan_host_through_the_tunnel() {
    let test = "clients_resolve_and_ping_a_lan_host_through_the_tunnel";
    let Some((_serial, lab)) = tunnel_lab(test, &TunnelSettings::default()) else {
        return;
    };
    let (h_ns, h_addr) = host1(&lab);
    for role in ["c1", "c2"] {
        let c = lab.node(role).unwrap();
        let s = ping_stats(&c.ns, IpAddr::V4(h_addr), None, &quick_ping()).unwrap();
        assert_eq!((s.sent, s.received), (10, 10), "{role}: {s:?}");
        // host1 resolved the client's address by ARP to the MAC the relay admitted.
        let neigh = h_ns
            .ip(&[
                "neigh",
                "show",
                "dev",
                "eth0",
                &c.lan_addr.unwrap().to_string(),
            ])
            .unwrap();
        assert!(
            neigh
                .to_ascii_lowercase()
                .contains(&admitted_mac(&lab, role)),
            "{role}: host1's neighbour entry {neigh:?}"
        );
    }
}

#[test]
fn broadcasts_cross_the_tunnel_both_ways() {
    let test = "broadcasts_cross_the_tunnel_both_ways";
    let Some((_serial, lab)) = tunnel_lab(test, &TunnelSettings::default()) else {
        return;
    };
    let (h_ns, h_addr) = host1(&lab);
    let wait = Duration::from_secs(3);
    for (i, role) in ["c1", "c2"].into_iter().enumerate() {
        let c = lab.node(role).unwrap();
        let port = 47_100 + 2 * i as u16;
        let got = broadcast_reaches(&c.ns, CLIENT_ADAPTER, h_ns, port, wait).unwrap();
        assert_eq!(
            got.map(|a| a.ip()),
            Some(IpAddr::V4(c.lan_addr.unwrap())),
            "{role} -> host1"
        );
        let back = broadcast_reaches(h_ns, "eth0", &c.ns, port + 1, wait).unwrap();
        assert_eq!(
            back.map(|a| a.ip()),
            Some(IpAddr::V4(h_addr)),
            "host1 -> {role}"
        );
    }
}

#[test]
fn two_clients_see_each_others_broadcasts() {
    let test = "two_clients_see_each_others_broadcasts";
    let Some((_serial, lab)) = tunnel_lab(test, &TunnelSettings::default()) else {
        return;
    };
    let c1 = lab.node("c1").unwrap();
    let c2 = lab.node("c2").unwrap();
    let wait = Duration::from_secs(3);
    let got = broadcast_reaches(&c1.ns, CLIENT_ADAPTER, &c2.ns, 47_200, wait).unwrap();
    assert_eq!(got.map(|a| a.ip()), Some(IpAddr::V4(c1.lan_addr.unwrap())));
    let got = broadcast_reaches(&c2.ns, CLIENT_ADAPTER, &c1.ns, 47_201, wait).unwrap();
    assert_eq!(got.map(|a| a.ip()), Some(IpAddr::V4(c2.lan_addr.unwrap())));
    // And unicast between them (client to client also goes through the relay).
    let s = ping_stats(
        &c1.ns,
        IpAddr::V4(c2.lan_addr.unwrap()),
        None,
        &quick_ping(),
    )
    .unwrap();
    assert_eq!(s.received, 10, "{s:?}");
}

#[test]
fn ipv6_link_local_works_through_the_tunnel() {
    let test = "ipv6_link_local_works_through_the_tunnel";
    let Some((_serial, lab)) = tunnel_lab(test, &TunnelSettings::default()) else {
        return;
    };
    let (h_ns, _) = host1(&lab);
    let h_ll = link_local_addr(h_ns, "eth0", Duration::from_secs(3)).unwrap();
    for role in ["c1", "c2"] {
        let c = lab.node(role).unwrap();
        let s = ping_stats(&c.ns, IpAddr::V6(h_ll), Some(CLIENT_ADAPTER), &quick_ping()).unwrap();
        assert_eq!(s.received, 10, "{role} -> host1 {h_ll}: {s:?}");
        // And the other way, to the client's own link-local address.
        let c_ll = link_local_addr(&c.ns, CLIENT_ADAPTER, Duration::from_secs(3)).unwrap();
        let s = ping_stats(h_ns, IpAddr::V6(c_ll), Some("eth0"), &quick_ping()).unwrap();
        assert_eq!(s.received, 10, "host1 -> {role} {c_ll}: {s:?}");
    }
}

/// Sends `payload` from `from` to `to` (retrying a few times while ARP resolves) and returns
/// what arrived.
fn udp_roundtrip(from: &Netns, to_ns: &Netns, to: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let sender: UdpSocket = from
        .run_in(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .unwrap()
        .unwrap();
    let receiver: UdpSocket = to_ns
        .run_in(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, to.port())))
        .unwrap()
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..6 {
        sender.send_to(payload, to).unwrap();
        match receiver.recv_from(&mut buf) {
            Ok((n, _)) => return Some(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("receiving on {to}: {e}"),
        }
    }
    None
}

#[test]
fn a_1472_byte_udp_datagram_from_a_1500_mtu_lan_host_arrives_whole() {
    let test = "a_1472_byte_udp_datagram_from_a_1500_mtu_lan_host_arrives_whole";
    let Some((_serial, lab)) = tunnel_lab(test, &TunnelSettings::default()) else {
        return;
    };
    let (h_ns, h_addr) = host1(&lab);
    let mtu = h_ns.ip(&["-o", "link", "show", "dev", "eth0"]).unwrap();
    assert!(mtu.contains("mtu 1500"), "{mtu}");
    // 1472 bytes of UDP payload make a 1500-byte IP packet and a 1514-byte frame, more than
    // one QUIC DATAGRAM carries: the tunnel fragments and reassembles it.
    let payload: Vec<u8> = (0..1472u32).map(|i| (i * 7 + 3) as u8).collect();
    for (i, role) in ["c1", "c2"].into_iter().enumerate() {
        let c = lab.node(role).unwrap();
        let port = 47_300 + 2 * i as u16;
        let to = SocketAddr::from((c.lan_addr.unwrap(), port));
        let got = udp_roundtrip(h_ns, &c.ns, to, &payload)
            .unwrap_or_else(|| panic!("host1 -> {role}: no 1472-byte datagram arrived"));
        assert_eq!(got.len(), 1472, "host1 -> {role}");
        assert!(
            got == payload,
            "host1 -> {role}: the datagram arrived altered"
        );
        // And the other way, from the client's 1500-byte adapter.
        let to = SocketAddr::from((h_addr, port + 1));
        let got = udp_roundtrip(&c.ns, h_ns, to, &payload)
            .unwrap_or_else(|| panic!("{role} -> host1: no 1472-byte datagram arrived"));
        assert!(
            got == payload,
            "{role} -> host1: the datagram arrived altered"
        );
    }
}

#[test]
fn an_ipx_frame_from_a_lan_host_reaches_the_tap_client_byte_for_byte() {
    let test = "an_ipx_frame_from_a_lan_host_reaches_the_tap_client_byte_for_byte";
    let Some((_serial, lab)) = tunnel_lab(test, &TunnelSettings::default()) else {
        return;
    };
    let (h_ns, _) = host1(&lab);
    let c1 = lab.node("c1").unwrap();
    let h_mac = mac_of(h_ns, "eth0").unwrap();
    let c_mac = mac_of(&c1.ns, CLIENT_ADAPTER).unwrap();
    let mut rx = packet_socket(&c1.ns, CLIENT_ADAPTER);
    let mut tx = packet_socket(h_ns, "eth0");
    // An IPX packet (Novell Ethernet II, EtherType 0x8137): checksum 0xffff, length, hops, type
    // 4 (PEP), destination network/node/socket, source network/node/socket, then data.
    for (label, dst) in [("broadcast", [0xff; 6]), ("unicast", c_mac)] {
        let data = format!("softlan ipx {label} {}", std::process::id());
        let mut ipx = vec![0xff, 0xff, 0, 0, 0, 4];
        ipx.extend_from_slice(&[0, 0, 0, 0]);
        ipx.extend_from_slice(&dst);
        ipx.extend_from_slice(&0x4000u16.to_be_bytes());
        ipx.extend_from_slice(&[0, 0, 0, 0]);
        ipx.extend_from_slice(&h_mac);
        ipx.extend_from_slice(&0x4000u16.to_be_bytes());
        ipx.extend_from_slice(data.as_bytes());
        let len = ipx.len() as u16;
        ipx[2..4].copy_from_slice(&len.to_be_bytes());
        let frame = ethernet(dst, h_mac, 0x8137, &ipx);
        let mut got = None;
        for _ in 0..3 {
            tx.send(&frame).unwrap();
            got = receive_frame(&mut rx, Duration::from_secs(1), |f| {
                contains(f, data.as_bytes())
            });
            if got.is_some() {
                break;
            }
        }
        let got = got.unwrap_or_else(|| panic!("the {label} IPX frame did not reach c1"));
        assert_eq!(got, frame, "the {label} IPX frame arrived altered");
    }
    // And back: an IPX broadcast from the TAP client reaches host1 unchanged.
    let mut watch = packet_socket(h_ns, "eth0");
    let mut send = packet_socket(&c1.ns, CLIENT_ADAPTER);
    let data = format!("softlan ipx from c1 {}", std::process::id());
    let mut ipx = vec![0xff, 0xff, 0, 0, 0, 4, 0, 0, 0, 0];
    ipx.extend_from_slice(&[0xff; 6]);
    ipx.extend_from_slice(&0x4000u16.to_be_bytes());
    ipx.extend_from_slice(&[0, 0, 0, 0]);
    ipx.extend_from_slice(&c_mac);
    ipx.extend_from_slice(&0x4000u16.to_be_bytes());
    ipx.extend_from_slice(data.as_bytes());
    let len = ipx.len() as u16;
    ipx[2..4].copy_from_slice(&len.to_be_bytes());
    let frame = ethernet([0xff; 6], c_mac, 0x8137, &ipx);
    let mut got = None;
    for _ in 0..3 {
        send.send(&frame).unwrap();
        got = receive_frame(&mut watch, Duration::from_secs(1), |f| {
            contains(f, data.as_bytes())
        });
        if got.is_some() {
            break;
        }
    }
    assert_eq!(
        got.as_deref(),
        Some(&frame[..]),
        "c1's IPX broadcast reaches host1 unchanged"
    );
}

#[test]
fn clients_and_gateway_come_back_after_a_relay_restart_with_the_same_addresses() {
    let test = "clients_and_gateway_come_back_after_a_relay_restart_with_the_same_addresses";
    let settings = TunnelSettings {
        // A killed relay says no goodbye: the gateway notices through its idle timeout.
        gateway_idle_timeout: Some(5),
        ..TunnelSettings::default()
    };
    let Some((_serial, mut lab)) = tunnel_lab(test, &settings) else {
        return;
    };
    let (_, h_addr) = host1(&lab);
    let before: Vec<Ipv4Addr> = ["c1", "c2"]
        .iter()
        .map(|r| lab.node(r).unwrap().lan_addr.unwrap())
        .collect();
    let pids = lab.tunnel().unwrap().pids();
    let old_relay = pids[0];

    lab.restart_relay()
        .unwrap_or_else(|e| panic!("the relay restarts: {e}"));
    let new_pids = lab.tunnel().unwrap().pids();
    assert_ne!(new_pids[0], old_relay, "the relay is a new process");
    assert!(
        !Path::new(&format!("/proc/{old_relay}")).exists()
            || std::fs::read_to_string(format!("/proc/{old_relay}/stat"))
                .is_ok_and(|s| s.contains(") Z")),
        "the old relay still runs"
    );
    assert_eq!(
        &new_pids[1..],
        &pids[1..],
        "gateway and clients kept running"
    );
    let restarted = Instant::now();
    let status = lab
        .wait_for_room(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("the room comes back: {e}"));
    eprintln!(
        "{test}: gateway and clients back in the room {:?} after the restart",
        restarted.elapsed()
    );
    assert_eq!(status.room(ROOM).unwrap().peers.len(), 3);

    // Traffic resumes, with the same addresses.
    for (role, addr) in ["c1", "c2"].into_iter().zip(&before) {
        let c = lab.node(role).unwrap();
        let now = lanparty_perf::lab::addresses(&c.ns, CLIENT_ADAPTER).unwrap();
        assert!(
            now.contains(&IpAddr::V4(*addr)),
            "{role}: {now:?}, had {addr}"
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let s = loop {
            let s = ping_stats(&c.ns, IpAddr::V4(h_addr), None, &quick_ping()).unwrap();
            if s.received == s.sent || Instant::now() >= deadline {
                break s;
            }
        };
        assert_eq!(s.received, s.sent, "{role} after the restart: {s:?}");
    }
}

#[test]
fn a_frame_with_a_spoofed_source_mac_from_a_client_never_reaches_the_lan() {
    let test = "a_frame_with_a_spoofed_source_mac_from_a_client_never_reaches_the_lan";
    let Some((_serial, lab)) = tunnel_lab(test, &TunnelSettings::default()) else {
        return;
    };
    let (h_ns, _) = host1(&lab);
    let c1 = lab.node("c1").unwrap();
    let own = mac_of(&c1.ns, CLIENT_ADAPTER).unwrap();
    let spoofed = [0x02, 0x5e, 0x66, 0x66, 0x66, 0x01];
    let mut watch = packet_socket(h_ns, "eth0");
    let mut tx = packet_socket(&c1.ns, CLIENT_ADAPTER);
    let tag = |what: &str| format!("softlan spoof test {what} {}", std::process::id());
    let before = drops(&lab, "spoofed_source");

    // The control: the same frame from the client's own MAC reaches host1 (so the watch works).
    let honest = ethernet([0xff; 6], own, 0x88b5, tag("honest").as_bytes());
    let mut seen = None;
    for _ in 0..3 {
        tx.send(&honest).unwrap();
        seen = receive_frame(&mut watch, Duration::from_secs(1), |f| {
            contains(f, tag("honest").as_bytes())
        });
        if seen.is_some() {
            break;
        }
    }
    assert_eq!(
        seen.as_deref(),
        Some(&honest[..]),
        "the honest frame reaches host1"
    );

    let forged = ethernet([0xff; 6], spoofed, 0x88b5, tag("forged").as_bytes());
    for _ in 0..3 {
        tx.send(&forged).unwrap();
    }
    let leaked = receive_frame(&mut watch, Duration::from_secs(2), |f| {
        contains(f, tag("forged").as_bytes())
    });
    assert_eq!(
        leaked, None,
        "a frame with a spoofed source MAC reached the LAN"
    );
    let after = drops(&lab, "spoofed_source");
    assert!(
        after >= before + 3,
        "spoofed_source drops {before} -> {after}"
    );
}

#[test]
fn a_rogue_dhcp_server_reply_from_a_client_never_reaches_the_lan() {
    let test = "a_rogue_dhcp_server_reply_from_a_client_never_reaches_the_lan";
    let Some((_serial, lab)) = tunnel_lab(test, &TunnelSettings::default()) else {
        return;
    };
    let (h_ns, _) = host1(&lab);
    let c1 = lab.node("c1").unwrap();
    let c_addr = c1.lan_addr.unwrap();
    let own = mac_of(&c1.ns, CLIENT_ADAPTER).unwrap();
    let mut watch = packet_socket(h_ns, "eth0");
    let mut tx = packet_socket(&c1.ns, CLIENT_ADAPTER);
    let before = drops(&lab, "dhcpv4_server_from_client");

    // A DHCPOFFER (BOOTREPLY, op 2) from port 67 to port 68, as a rogue server would send.
    let xid = std::process::id().to_be_bytes();
    let mut offer = vec![0u8; 240];
    offer[0] = 2; // BOOTREPLY
    offer[1] = 1;
    offer[2] = 6;
    offer[4..8].copy_from_slice(&xid);
    offer[16..20].copy_from_slice(&Ipv4Addr::new(198, 18, 0, 250).octets()); // yiaddr
    offer[20..24].copy_from_slice(&c_addr.octets()); // siaddr
    offer[28..34].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x77]); // chaddr
    offer[236..240].copy_from_slice(&[99, 130, 83, 99]); // magic cookie
    offer.extend_from_slice(&[53, 1, 2]); // DHCPOFFER
    offer.extend_from_slice(&[54, 4]);
    offer.extend_from_slice(&c_addr.octets()); // server identifier: us
    offer.extend_from_slice(&[3, 4, 198, 18, 0, 66]); // router: a rogue one
    offer.push(255);
    let rogue = udp_broadcast_frame(own, c_addr, 67, 68, &offer);

    // The control: the same frame on other ports reaches host1 (so frame and watch are right).
    let control = udp_broadcast_frame(own, c_addr, 47_400, 47_401, &offer);
    let is_ours = |f: &[u8], sport: u16| {
        f.len() > 14 + 20 + 8 + 8
            && f[34..36] == sport.to_be_bytes()
            && f[14 + 20 + 8 + 4..14 + 20 + 8 + 8] == xid
    };
    let mut seen = None;
    for _ in 0..3 {
        tx.send(&control).unwrap();
        seen = receive_frame(&mut watch, Duration::from_secs(1), |f| is_ours(f, 47_400));
        if seen.is_some() {
            break;
        }
    }
    assert_eq!(
        seen.as_deref(),
        Some(&control[..]),
        "the control frame reaches host1"
    );

    for _ in 0..3 {
        tx.send(&rogue).unwrap();
    }
    let leaked = receive_frame(&mut watch, Duration::from_secs(2), |f| is_ours(f, 67));
    assert_eq!(leaked, None, "a rogue DHCP server reply reached the LAN");
    let after = drops(&lab, "dhcpv4_server_from_client");
    assert!(
        after >= before + 3,
        "dhcpv4_server_from_client drops {before} -> {after}"
    );
}

#[test]
fn the_tunnel_lab_report_passes_every_check() {
    let test = "the_tunnel_lab_report_passes_every_check";
    let Some((_serial, mut lab)) = tunnel_lab(test, &TunnelSettings::default()) else {
        return;
    };
    let opts = ReportOptions {
        ping: quick_ping(),
        iperf_secs: 1,
        udp_rates: false,
        ..ReportOptions::default()
    };
    let report = lab.report(&opts, &mut |_| {}, &AtomicBool::new(false));
    let md = report.to_markdown();
    eprintln!("{md}");
    assert_eq!(report.variant, "tunnel");
    assert!(report.all_passed(), "{md}");
    for role in ["c1", "c2"] {
        for check in ["DHCP address", "ping RTT", "broadcast", "IPv6 link-local"] {
            assert!(
                report
                    .checks
                    .iter()
                    .any(|c| c.check == check && c.path.contains(role)),
                "{check} for {role} missing: {md}"
            );
        }
    }

    // Dropping the lab kills every program by PID and removes the namespaces.
    let pids = lab.tunnel().unwrap().pids();
    let names = lab.namespace_names();
    drop(lab);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} survived the lab"
        );
    }
    let left = lanparty_datapath::sys::netns::list_namespaces().unwrap();
    for name in names {
        assert!(!left.contains(&name), "{name} survived the lab");
    }
}

#[test]
fn lanparty_perf_lab_runs_the_tunnel_and_prints_a_passing_table() {
    let test = "lanparty_perf_lab_runs_the_tunnel_and_prints_a_passing_table";
    if !require_root(test) {
        return;
    }
    if !dnsmasq_installed() {
        eprintln!("{test}: skipped: dnsmasq is not installed (apt-get install dnsmasq)");
        return;
    }
    let bins = match binaries() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("{test}: skipped: {why}");
            return;
        }
    };
    let _serial = serial();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lanparty-perf"))
        .args(["lab", "--iperf-secs", "0", "--bin-dir"])
        .arg(bins.relay.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("lanparty-perf lab did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("## softlan lab (tunnel)"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for row in [
        "| DHCP address | c1 | pass |",
        "| DHCP address | c2 | pass |",
        "| broadcast | host1 -> c2 | pass |",
        "| IPv6 link-local | c1 -> host1 | pass |",
    ] {
        assert!(stdout.contains(row), "{row} missing: {stdout}");
    }
    assert!(
        stderr.contains("c2: joined; DHCP through the tunnel gave 198.18.0."),
        "{stderr}"
    );
    assert!(stderr.contains("lab: torn down"), "{stderr}");
}

#[test]
fn lanparty_perf_lab_says_how_to_build_missing_programs() {
    let test = "lanparty_perf_lab_says_how_to_build_missing_programs";
    if !require_root(test) {
        return;
    }
    let empty = std::env::temp_dir().join(format!("lplab-e2e-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lanparty-perf"))
        .args(["lab", "--bin-dir"])
        .arg(&empty)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("lanparty-relay, lanparty-gateway, lanparty-client not found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cargo build --release --workspace"),
        "{stderr}"
    );
    assert!(stderr.contains("--direct"), "{stderr}");
    // Nothing was built: the check comes before the lab.
    assert!(!stderr.contains("creating namespaces"), "{stderr}");
}
