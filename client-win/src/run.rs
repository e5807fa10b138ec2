//! Portable pieces of the client loop: the uplink's settings from a [`ClientConfig`], the
//! emulator's settings, and how a frame from the room is routed when the adapter is a true L2
//! one (TAP, tap-windows6) but the address still comes from the built-in DHCP client.
//!
//! On an L2 adapter the operating system's IP stack owns ARP, neighbour discovery and
//! everything else; only its DHCP client is missing (Linux has none by default, and a test
//! namespace has none at all). So the client runs the [`Emulator`](crate::l2emu::Emulator)'s
//! DHCP client next to the OS stack and shows it only what it needs: DHCP replies (UDP to port
//! 68), which the OS never sees, and ARP replies, which both see (the emulator needs them to
//! renew by unicast). ARP requests for our address are left to the OS, which answers them.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};

use lanparty_control::msg::{Hello, MIN_DATAGRAM_BUDGET, PROTOCOL_VERSION, Role};
use lanparty_control::session::SessionConfig;
use lanparty_control::uplink::UplinkConfig;
use lanparty_datapath::Mac;
use lanparty_datapath::frag::ReassemblyConfig;
use lanparty_datapath::quic::tls::{self, TlsError};

use crate::config::{Addressing, ClientConfig};
use crate::l2emu::{self, Ipv4Config, Ipv4Mode};

/// Resolves the relay's host name, preferring IPv4 (the common case on party networks).
///
/// # Errors
///
/// When the name does not resolve.
pub fn resolve_relay(host: &str, port: u16) -> io::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("relay host {host} has no address"),
            )
        })
}

/// The local address to bind for talking to `relay`: any address of the same family.
pub fn bind_addr_for(relay: SocketAddr) -> SocketAddr {
    match relay {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("a valid constant address"),
        SocketAddr::V6(_) => "[::]:0".parse().expect("a valid constant address"),
    }
}

/// The uplink's settings: our hello (client role, our MAC), the session's status words, TLS
/// trust, MSS clamping on.
///
/// # Errors
///
/// When the TLS trust cannot be built (unreadable CA file, no roots).
pub fn uplink_config(
    cfg: &ClientConfig,
    mac: Mac,
    relay: SocketAddr,
    seed: u64,
) -> Result<UplinkConfig, TlsError> {
    Ok(UplinkConfig {
        relay,
        server_name: cfg.relay_host.clone(),
        client: tls::client_config(&cfg.trust)?,
        hello: Hello {
            version: PROTOCOL_VERSION,
            role: Role::Client,
            room: cfg.room.clone(),
            mac,
            secret: cfg.secret.clone(),
            gateway_token: None,
            datagram_budget: MIN_DATAGRAM_BUDGET,
            name: cfg.display_name.clone(),
        },
        session: SessionConfig::new(cfg.relay_display(), cfg.room.as_str(), mac, seed),
        reassembly: ReassemblyConfig::default(),
        clamp_mss: true,
    })
}

/// The emulator's settings for our MAC and addressing. `hostname` goes in DHCP option 12.
pub fn emulator_config(
    mac: Mac,
    addressing: Addressing,
    hostname: Option<String>,
    seed: u64,
) -> l2emu::Config {
    let mut config = l2emu::Config::new(mac, seed);
    config.ipv4 = match addressing {
        Addressing::Dhcp => Ipv4Mode::Dhcp { hostname },
        Addressing::Static { addr, prefix } => Ipv4Mode::Static(Ipv4Config {
            addr,
            prefix,
            router: None,
        }),
    };
    config.ipv6_link_local = Some(eui64_link_local(mac));
    config
}

/// A DHCP host name (option 12) made from the display name: letters, digits and hyphens only
/// (RFC 952/1123), spaces and underscores turned into hyphens, at most 63 characters; `None`
/// when nothing usable is left.
pub fn dhcp_hostname(display_name: &str) -> Option<String> {
    let name: String = display_name
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' => Some(c),
            ' ' | '_' | '.' => Some('-'),
            _ => None,
        })
        .take(63)
        .collect();
    let name = name.trim_matches('-');
    (!name.is_empty()).then(|| name.to_owned())
}

pub use crate::l2emu::eui64_link_local;

/// Most IPv6 addresses [`learn_ipv6_source`] teaches the emulator (link-local, stable and a
/// few temporary ones).
pub const MAX_LEARNED_IPV6: usize = 16;

/// Teaches the emulator the IPv6 source address of a packet the adapter's stack sent, so that
/// it answers neighbour solicitations for it. The stack picks its own addresses (Windows gives
/// wintun a random link-local one, SLAAC and privacy extensions add more, a player may add
/// one by hand); answering for exactly the addresses in use needs no platform API. Sources
/// that are unspecified, multicast or beyond [`MAX_LEARNED_IPV6`] addresses are ignored.
pub fn learn_ipv6_source(emu: &mut l2emu::Emulator, packet: &[u8]) {
    let Some(src) = packet
        .get(8..24)
        .filter(|_| packet.first().is_some_and(|b| b >> 4 == 6))
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(Ipv6Addr::from)
    else {
        return;
    };
    let known = emu.ipv6_addrs();
    if src.is_unspecified()
        || src.is_multicast()
        || known.contains(&src)
        || known.len() >= MAX_LEARNED_IPV6
    {
        return;
    }
    emu.add_ipv6(src);
}

/// Where a frame from the room goes when an L2 adapter runs next to the built-in DHCP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L2Route {
    /// Only the OS stack (the adapter).
    Adapter,
    /// Only the DHCP client: an IPv4 UDP datagram to port 68.
    DhcpClient,
    /// Both: an ARP reply.
    Both,
}

/// Decides where `frame` goes (see [`L2Route`]). Untagged frames only; anything short or
/// odd goes to the adapter, whose stack judges it.
pub fn l2_route(frame: &[u8]) -> L2Route {
    const ARP: [u8; 2] = [0x08, 0x06];
    const IPV4: [u8; 2] = [0x08, 0x00];
    match frame.get(12..14) {
        Some(t) if t == ARP => {
            if frame.get(20..22) == Some(&[0, 2]) {
                L2Route::Both
            } else {
                L2Route::Adapter
            }
        }
        Some(t) if t == IPV4 => {
            let Some(&vihl) = frame.get(14) else {
                return L2Route::Adapter;
            };
            let ihl = usize::from(vihl & 0x0f) * 4;
            let udp = frame.get(23) == Some(&17);
            // Only a first fragment carries the UDP header.
            let first = frame
                .get(20..22)
                .is_some_and(|f| u16::from_be_bytes([f[0], f[1]]) & 0x1fff == 0);
            let port = frame
                .get(14 + ihl + 2..14 + ihl + 4)
                .map(|p| u16::from_be_bytes([p[0], p[1]]));
            if vihl >> 4 == 4 && ihl >= 20 && udp && first && port == Some(68) {
                L2Route::DhcpClient
            } else {
                L2Route::Adapter
            }
        }
        _ => L2Route::Adapter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_udp(dst_port: u16, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        f[23] = 17;
        f[36..38].copy_from_slice(&dst_port.to_be_bytes());
        f
    }

    #[test]
    fn dhcp_replies_go_to_the_dhcp_client_and_arp_replies_to_both() {
        assert_eq!(l2_route(&ipv4_udp(68, 0)), L2Route::DhcpClient);
        assert_eq!(l2_route(&ipv4_udp(67, 0)), L2Route::Adapter);
        assert_eq!(l2_route(&ipv4_udp(68, 0x0010)), L2Route::Adapter);
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        arp[20..22].copy_from_slice(&[0, 2]);
        assert_eq!(l2_route(&arp), L2Route::Both);
        arp[21] = 1;
        assert_eq!(l2_route(&arp), L2Route::Adapter);
        assert_eq!(l2_route(&[0u8; 5]), L2Route::Adapter);
        let mut ipx = vec![0u8; 60];
        ipx[12..14].copy_from_slice(&[0x81, 0x37]);
        assert_eq!(l2_route(&ipx), L2Route::Adapter);
    }

    #[test]
    fn ipv6_sources_from_the_adapter_are_learned_once_and_bounded() {
        let mac: Mac = "02:11:22:33:44:55".parse().unwrap();
        let now = std::time::Instant::now();
        let mut emu = l2emu::Emulator::new(now, emulator_config(mac, Addressing::Dhcp, None, 1));
        let packet = |src: Ipv6Addr| {
            let mut p = vec![0u8; 40];
            p[0] = 0x60;
            p[8..24].copy_from_slice(&src.octets());
            p
        };
        let ula: Ipv6Addr = "fd00::5:2".parse().unwrap();
        learn_ipv6_source(&mut emu, &packet(ula));
        learn_ipv6_source(&mut emu, &packet(ula));
        learn_ipv6_source(&mut emu, &packet(Ipv6Addr::UNSPECIFIED));
        learn_ipv6_source(&mut emu, &packet("ff02::1".parse().unwrap()));
        let mut v4 = packet(ula);
        v4[0] = 0x45;
        learn_ipv6_source(&mut emu, &v4);
        learn_ipv6_source(&mut emu, &[0x60, 0, 0]);
        assert_eq!(emu.ipv6_addrs(), &[eui64_link_local(mac), ula]);
        for i in 0..40u16 {
            learn_ipv6_source(
                &mut emu,
                &packet(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 9, i)),
            );
        }
        assert_eq!(emu.ipv6_addrs().len(), MAX_LEARNED_IPV6);
    }

    #[test]
    fn display_names_become_valid_dhcp_host_names() {
        assert_eq!(dhcp_hostname("alice").as_deref(), Some("alice"));
        assert_eq!(dhcp_hostname("Bob's PC 2").as_deref(), Some("Bobs-PC-2"));
        assert_eq!(dhcp_hostname(" _ünï_ ").as_deref(), Some("n"));
        assert_eq!(dhcp_hostname("日本"), None);
        assert_eq!(dhcp_hostname(&"x".repeat(80)).map(|n| n.len()), Some(63));
    }

    #[test]
    fn eui64_flips_the_universal_bit_and_inserts_fffe() {
        let mac: Mac = "02:11:22:33:44:55".parse().unwrap();
        assert_eq!(
            eui64_link_local(mac),
            "fe80::11:22ff:fe33:4455".parse::<Ipv6Addr>().unwrap()
        );
    }
}
