//! `lanparty-gateway`: bridges a party LAN's network interface into a softlan room.
//!
//! The gateway joins a relay room with role `gateway` and the NIC's own MAC, reads the LAN
//! through an AF_PACKET RX ring (TPACKET_V2 by default, TPACKET_V3 with `--rx-ring v3`; see
//! [`RxRingMode`] for the trade-off), sends the frames remote players need (to a client's
//! MAC, broadcast, multicast) into the room, and writes the room's frames onto the LAN through
//! the TX ring. Everything runs on one thread:
//!
//! - [`config`]: flags, config file and join link, combined into a [`GatewayConfig`].
//! - [`bridge`]: the datapath loop ([`Bridge`]).
//! - [`checksum`]: completing TCP/UDP checksums that local senders left to hardware.
//! - [`sys`]: the signal flag and the interface MAC (the only `unsafe` in this crate).
//!
//! [`start`] opens everything in the right order and turns each failure into a one-line error
//! that says what to do.

pub mod bridge;
pub mod checksum;
pub mod config;
#[allow(unsafe_code)]
pub mod sys;

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

pub use bridge::{Bridge, BridgeCounters};
pub use config::{Cli, ConfigError, FileConfig, GatewayConfig, RxRingMode};

use lanparty_control::msg::{Hello, MIN_DATAGRAM_BUDGET, PROTOCOL_VERSION, Role};
use lanparty_control::session::SessionConfig;
use lanparty_control::uplink::{Uplink, UplinkConfig};
use lanparty_datapath::frag::ReassemblyConfig;
use lanparty_datapath::io;
use lanparty_datapath::quic::tls::{self, TlsError};
use lanparty_datapath::quic::{Driver, DriverConfig};
use lanparty_datapath::runner::Runner;
use lanparty_datapath::sys::afpacket::{
    AfPacketError, PacketRing, RingConfig, RingVersion, nic_warnings,
};

/// Why the gateway could not start. Every message is one line that says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The packet ring could not be opened (no interface, interface down, no CAP_NET_RAW...).
    #[error(transparent)]
    Interface(#[from] AfPacketError),
    /// The interface's MAC could not be read or cannot identify a peer.
    #[error("interface {ifname}: {reason}")]
    Mac {
        /// The interface.
        ifname: String,
        /// What is wrong.
        reason: String,
    },
    /// The TLS configuration could not be built (unreadable CA file...).
    #[error("relay certificate trust: {0}")]
    Tls(TlsError),
    /// The relay's name does not resolve.
    #[error("cannot resolve relay {relay}: {reason} (check the name or use an IP address)")]
    Resolve {
        /// The relay as given.
        relay: String,
        /// What the resolver said.
        reason: String,
    },
    /// The UDP socket could not be opened or the ring fd not watched.
    #[error("opening the UDP socket: {0}")]
    Socket(std::io::Error),
}

/// Opens the ring on the configured interface, logs NIC warnings, builds the uplink and returns
/// the bridge, ready to [`Bridge::turn`]. Nothing is sent before the first turn.
///
/// The ring and the UDP socket belong to the network namespace of the calling thread (a lab or
/// benchmark calls this inside `Netns::run_in` and drives the returned bridge from any thread).
/// This plus [`Bridge::turn`] and [`BridgeCounters::lan_forwarded`] is the hook for
/// `lanparty-perf bench gateway`: frames per second from the LAN ring into QUIC.
///
/// # Errors
///
/// See [`StartError`].
pub fn start(config: &GatewayConfig, now: Instant) -> Result<Bridge, StartError> {
    let ifname = &config.interface;
    let ring = PacketRing::open(ifname, &ring_config(config.rx_ring))?;
    for warning in nic_warnings(ifname) {
        tracing::warn!("{warning}");
    }
    let mac_err = |reason: String| StartError::Mac {
        ifname: ifname.clone(),
        reason,
    };
    let mac = sys::interface_mac(ring.as_fd(), ifname).map_err(|e| mac_err(e.to_string()))?;
    mac.validate_peer().map_err(|e| {
        mac_err(format!(
            "{e}; the gateway joins the room with its NIC's own MAC, so bridge an Ethernet \
             interface"
        ))
    })?;

    let client = tls::client_config(&config.trust).map_err(StartError::Tls)?;
    let relay_text = config.relay_display();
    let relay =
        resolve(&config.relay_host, config.relay_port).map_err(|reason| StartError::Resolve {
            relay: relay_text.clone(),
            reason,
        })?;
    let local: SocketAddr = match relay {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let backend = io::open_best(local).map_err(StartError::Socket)?;
    tracing::info!(
        interface = %ifname,
        %mac,
        relay = %relay_text,
        address = %relay,
        backend = %backend.kind(),
        rx_ring = ?config.rx_ring,
        "starting gateway"
    );

    let mut driver_config = DriverConfig::default();
    driver_config.transport.idle_timeout = config.idle_timeout;
    // Keep-alives must come well inside the idle timeout, or a quiet room would time out.
    driver_config.transport.keep_alive = driver_config
        .transport
        .keep_alive
        .min(config.idle_timeout / 3)
        .max(Duration::from_millis(100));
    let runner = Runner::new(Driver::new(driver_config, None), backend);
    let hello = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Gateway,
        room: config.room.clone(),
        mac,
        secret: config.secret.clone(),
        gateway_token: config.gateway_token.clone(),
        datagram_budget: MIN_DATAGRAM_BUDGET,
        name: config.name.clone(),
    };
    let session = SessionConfig::new(relay_text, config.room.as_str(), mac, rand::random::<u64>());
    let uplink = Uplink::new(
        now,
        runner,
        UplinkConfig {
            relay,
            server_name: config.relay_host.clone(),
            client,
            hello,
            session,
            reassembly: ReassemblyConfig::default(),
            clamp_mss: true,
        },
    );
    Bridge::new(now, ring, uplink, config.room.as_str()).map_err(StartError::Socket)
}

/// RX ring size in bytes (both layouts).
pub const RX_RING_BYTES: u32 = 32 << 20;

/// The packet ring settings for `mode`: the datapath's defaults with the chosen layout, an
/// RX ring of [`RX_RING_BYTES`], and TX frames copied into linear socket buffers by the
/// kernel ([`RingConfig::tx_linear_copy`]: on a veth, a TX ring frame left as a page fragment
/// costs a page allocation and a second copy, and `bench gateway` measured the TX ring 1.5x
/// cheaper per 1400-byte frame with the linear copy).
///
/// The RX ring is what absorbs the time the gateway thread does not run: a burst, or the
/// scheduler giving the CPU to someone else. With TPACKET_V2 every frame takes a 2 KiB slot
/// whatever its size, so the ring's size is a frame count: the datapath's 4 MiB default holds
/// 2,048 frames, about 10 ms at 200,000 frames/s, and `bench gateway` lost up to 3.5 % of
/// the frames sent at 80 % of the maximum rate on a shared 2-CPU machine, every one a
/// ring-full drop while the thread waited for a CPU; with 16 MiB it still lost up to 14 % of
/// a 64-byte run in one repeat out of four. 32 MiB (16,384 V2 slots: about 55 ms at 300,000
/// frames/s, 190 ms of full-size frames on a gigabit link; V3 packs small frames tighter)
/// lost none in the runs made; it costs 28 MiB more kernel memory than the default.
pub fn ring_config(mode: RxRingMode) -> RingConfig {
    let base = RingConfig::default();
    RingConfig {
        version: match mode {
            RxRingMode::V2 => RingVersion::V2,
            RxRingMode::V3 => RingVersion::V3,
        },
        rx_block_count: RX_RING_BYTES / base.rx_block_size,
        tx_linear_copy: true,
        ..base
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    let mut addrs = (host, port).to_socket_addrs().map_err(|e| e.to_string())?;
    addrs.next().ok_or_else(|| "no address found".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ring_layouts_get_the_large_rx_ring_and_keep_the_tx_ring() {
        for (mode, version) in [
            (RxRingMode::V2, RingVersion::V2),
            (RxRingMode::V3, RingVersion::V3),
        ] {
            let c = ring_config(mode);
            assert_eq!(c.version, version);
            assert_eq!(c.rx_block_size * c.rx_block_count, RX_RING_BYTES);
            assert!(
                c.tx_block_count > 0,
                "frames to the LAN go through a TX ring"
            );
            assert!(c.promiscuous && c.ignore_outgoing && c.qdisc_bypass);
            assert!(c.tx_linear_copy);
        }
        // With V2 every frame takes a slot: 16,384 slots of 2 KiB.
        let v2 = ring_config(RxRingMode::V2);
        assert_eq!(RX_RING_BYTES / v2.rx_frame_size, 16_384);
    }
}
