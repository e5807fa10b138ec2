//! The few IPv4, IPv6, ARP, UDP and ICMPv6 layouts the emulator reads and writes.
//!
//! Readers take untrusted slices and return `None` instead of panicking; writers append to a
//! caller's buffer. Only the fields the emulator needs are decoded.

use std::net::{Ipv4Addr, Ipv6Addr};

use lanparty_datapath::Mac;

/// IP protocol number of UDP.
pub(crate) const PROTO_UDP: u8 = 17;
/// IPv6 next-header value of ICMPv6.
pub(crate) const PROTO_ICMPV6: u8 = 58;
/// ICMPv6 router advertisement.
pub(crate) const ICMPV6_RA: u8 = 134;
/// ICMPv6 neighbour solicitation.
pub(crate) const ICMPV6_NS: u8 = 135;
/// ICMPv6 neighbour advertisement.
pub(crate) const ICMPV6_NA: u8 = 136;
/// NDP option: source link-layer address.
pub(crate) const NDP_OPT_SLLA: u8 = 1;
/// NDP option: target link-layer address.
pub(crate) const NDP_OPT_TLLA: u8 = 2;
/// ARP operation: request.
pub(crate) const ARP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub(crate) const ARP_REPLY: u16 = 2;
/// Length of an Ethernet/IPv4 ARP packet.
pub(crate) const ARP_LEN: usize = 28;

/// An Ethernet/IPv4 ARP packet (RFC 826).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Arp {
    pub(crate) op: u16,
    pub(crate) sender_mac: Mac,
    pub(crate) sender_ip: Ipv4Addr,
    pub(crate) target_mac: Mac,
    pub(crate) target_ip: Ipv4Addr,
}

impl Arp {
    /// Reads an ARP packet for Ethernet (htype 1) and IPv4 (ptype 0x0800, lengths 6 and 4).
    pub(crate) fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < ARP_LEN
            || b[0..2] != [0, 1]
            || b[2..4] != [0x08, 0x00]
            || b[4] != 6
            || b[5] != 4
        {
            return None;
        }
        Some(Self {
            op: u16::from_be_bytes([b[6], b[7]]),
            sender_mac: Mac::from_bytes(&b[8..14]),
            sender_ip: ipv4_at(b, 14)?,
            target_mac: Mac::from_bytes(&b[18..24]),
            target_ip: ipv4_at(b, 24)?,
        })
    }

    /// Appends the 28-byte packet.
    pub(crate) fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
        out.extend_from_slice(&self.op.to_be_bytes());
        out.extend_from_slice(&self.sender_mac.0);
        out.extend_from_slice(&self.sender_ip.octets());
        out.extend_from_slice(&self.target_mac.0);
        out.extend_from_slice(&self.target_ip.octets());
    }
}

/// Reads four bytes at `at` as an IPv4 address.
pub(crate) fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(s))
}

/// Reads sixteen bytes at `at` as an IPv6 address.
pub(crate) fn ipv6_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let s: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(s))
}

/// The parts of an IPv4 header the emulator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv4Info {
    pub(crate) header_len: usize,
    pub(crate) total_len: usize,
    pub(crate) protocol: u8,
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    /// True for the first (or only) fragment, the one that carries the transport header.
    pub(crate) first_fragment: bool,
}

/// Reads an IPv4 header; `None` unless the version, header length and total length are
/// consistent with the buffer (which may carry Ethernet padding after the packet).
pub(crate) fn ipv4_info(b: &[u8]) -> Option<Ipv4Info> {
    let first = *b.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < 20 || b.len() < header_len {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if total_len < header_len || total_len > b.len() {
        return None;
    }
    Some(Ipv4Info {
        header_len,
        total_len,
        protocol: b[9],
        src: ipv4_at(b, 12)?,
        dst: ipv4_at(b, 16)?,
        first_fragment: u16::from_be_bytes([b[6], b[7]]) & 0x1fff == 0,
    })
}

/// The parts of an IPv6 header the emulator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv6Info {
    pub(crate) total_len: usize,
    pub(crate) next_header: u8,
    pub(crate) hop_limit: u8,
    pub(crate) src: Ipv6Addr,
    pub(crate) dst: Ipv6Addr,
}

/// Length of the fixed IPv6 header.
pub(crate) const IPV6_HEADER_LEN: usize = 40;

/// Reads an IPv6 header; `None` unless the version and payload length fit the buffer.
pub(crate) fn ipv6_info(b: &[u8]) -> Option<Ipv6Info> {
    if b.len() < IPV6_HEADER_LEN || b[0] >> 4 != 6 {
        return None;
    }
    let total_len = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([b[4], b[5]]));
    if total_len > b.len() {
        return None;
    }
    Some(Ipv6Info {
        total_len,
        next_header: b[6],
        hop_limit: b[7],
        src: ipv6_at(b, 8)?,
        dst: ipv6_at(b, 24)?,
    })
}

/// Adds `data` to a running one's-complement sum (RFC 1071).
use lanparty_datapath::wire::checksum::{add as sum_words, finish as fold};

/// The Internet checksum of `data`.
pub(crate) fn checksum(data: &[u8]) -> u16 {
    lanparty_datapath::wire::checksum::internet(data)
}

/// The ICMPv6 checksum (RFC 4443 section 2.3) of `message` (with its checksum field zero)
/// between `src` and `dst`.
pub(crate) fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum = sum_words(0, &src.octets());
    sum = sum_words(sum, &dst.octets());
    // Upper-layer packet length fits in 32 bits for any message we build.
    sum += (message.len() as u32 >> 16) + (message.len() as u32 & 0xffff);
    sum += u32::from(PROTO_ICMPV6);
    fold(sum_words(sum, message))
}

/// Appends an IPv4 header (no options, TTL `ttl`, DF clear) with a correct checksum for a
/// payload of `payload_len` bytes.
pub(crate) fn emit_ipv4_header(
    out: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    ttl: u8,
    payload_len: usize,
) {
    let start = out.len();
    let total = u16::try_from(20 + payload_len).unwrap_or(u16::MAX);
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, ttl, protocol, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    let sum = checksum(&out[start..start + 20]);
    out[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
}

/// Appends a UDP header and `payload` (checksum 0, which RFC 768 allows over IPv4).
pub(crate) fn emit_udp(out: &mut Vec<u8>, src_port: u16, dst_port: u16, payload: &[u8]) {
    let len = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&src_port.to_be_bytes());
    out.extend_from_slice(&dst_port.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
}

/// Appends an IPv6 header (hop limit 255, for NDP) and an ICMPv6 `message` whose checksum
/// field (bytes 2..4) this function fills in.
pub(crate) fn emit_icmpv6(out: &mut Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr, message: &mut [u8]) {
    message[2] = 0;
    message[3] = 0;
    let sum = icmpv6_checksum(src, dst, message);
    message[2..4].copy_from_slice(&sum.to_be_bytes());
    let len = u16::try_from(message.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[PROTO_ICMPV6, 255]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    out.extend_from_slice(message);
}

/// The solicited-node multicast address of `addr` (RFC 4291 section 2.7.1).
pub(crate) fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet group address of an IPv4 multicast group (RFC 1112 section 6.4).
pub(crate) fn ipv4_multicast_mac(group: Ipv4Addr) -> Mac {
    let o = group.octets();
    Mac([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
}

/// The Ethernet group address of an IPv6 multicast group (RFC 2464 section 7).
pub(crate) fn ipv6_multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The modified EUI-64 link-local address of `mac` (RFC 4291 appendix A).
pub fn eui64_link_local(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

/// Finds the link-layer address in NDP options of kind `kind` (`NDP_OPT_SLLA` or
/// `NDP_OPT_TLLA`); `None` when absent or when the options are malformed (RFC 4861 section
/// 4.6: a zero length is invalid).
pub(crate) fn ndp_lladdr(mut options: &[u8], kind: u8) -> Option<Mac> {
    while options.len() >= 2 {
        let len = usize::from(options[1]) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if options[0] == kind && len >= 8 {
            return Some(Mac::from_bytes(&options[2..8]));
        }
        options = &options[len..];
    }
    None
}

/// NDP option: prefix information.
const NDP_OPT_PREFIX: u8 = 3;

/// The on-link prefixes of a router advertisement's prefix information options (RFC 4861
/// section 4.6.2): (prefix, length, valid lifetime in seconds) for each option with the L flag.
pub(crate) fn ndp_on_link_prefixes(mut options: &[u8]) -> Vec<(Ipv6Addr, u8, u32)> {
    let mut out = Vec::new();
    while options.len() >= 2 {
        let len = usize::from(options[1]) * 8;
        if len == 0 || len > options.len() {
            break;
        }
        let opt = &options[..len];
        if opt[0] == NDP_OPT_PREFIX && len == 32 && opt[3] & 0x80 != 0 && opt[2] <= 128 {
            let valid = u32::from_be_bytes([opt[4], opt[5], opt[6], opt[7]]);
            if let Some(prefix) = ipv6_at(opt, 16) {
                out.push((prefix, opt[2], valid));
            }
        }
        options = &options[len..];
    }
    out
}

/// True when the first `len` bits of `addr` and `prefix` agree.
pub(crate) fn ipv6_prefix_match(addr: Ipv6Addr, prefix: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0);
    (u128::from(addr) ^ u128::from(prefix)) & mask == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2, so the checksum is !0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn multicast_and_eui64_mappings() {
        assert_eq!(
            ipv4_multicast_mac(Ipv4Addr::new(239, 255, 255, 250)),
            Mac([0x01, 0x00, 0x5e, 0x7f, 0xff, 0xfa])
        );
        assert_eq!(
            solicited_node("fe80::211:22ff:fe33:4455".parse().unwrap()),
            "ff02::1:ff33:4455".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            eui64_link_local(Mac([0x00, 0x11, 0x22, 0x33, 0x44, 0x55])),
            "fe80::211:22ff:fe33:4455".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn prefix_match() {
        let a: Ipv6Addr = "2001:db8:1:2::5".parse().unwrap();
        let p: Ipv6Addr = "2001:db8:1::".parse().unwrap();
        assert!(ipv6_prefix_match(a, p, 48));
        assert!(!ipv6_prefix_match(a, p, 64));
        assert!(ipv6_prefix_match(a, Ipv6Addr::UNSPECIFIED, 0));
    }

    #[test]
    fn malformed_ndp_options_are_rejected() {
        assert_eq!(ndp_lladdr(&[1, 0, 0, 0], NDP_OPT_SLLA), None);
        assert_eq!(ndp_lladdr(&[1, 2, 1, 2, 3, 4, 5, 6], NDP_OPT_SLLA), None);
        assert_eq!(
            ndp_lladdr(&[1, 1, 1, 2, 3, 4, 5, 6], NDP_OPT_SLLA),
            Some(Mac([1, 2, 3, 4, 5, 6]))
        );
    }
}
