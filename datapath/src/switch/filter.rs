//! The L3/L4 safety filters applied to frames from clients: rogue DHCPv4/DHCPv6 servers,
//! IPv6 router advertisements and redirects.
//!
//! The parser reads only the leading bytes of a frame (a whole frame, or fragment 0 of a
//! fragmented one) and never allocates. It looks through up to two VLAN tags (802.1Q 0x8100,
//! 802.1ad 0x88a8, the pre-standard 0x9100). Frames that are not IPv4 or IPv6 (IPX, ARP, 802.3
//! length-field frames with LLC/SNAP) pass untouched. IPv4 fragments with a non-zero offset
//! carry no UDP header and pass; so do IPv6 fragments with a non-zero offset.
//!
//! When the filters need a field that is not in the leading bytes, the frame is dropped as
//! [`DropReason::TruncatedHeaders`]: otherwise a client could split a DHCP offer right after
//! the IP header and slip its UDP header past the filter in fragment 1 (RFC 7112 requires the
//! whole header chain in the first fragment; we apply the same rule to our overlay fragments).

use super::DropReason;
use crate::wire::ethernet::{HEADER_LEN, ethertype};

const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
const TPID_9100: u16 = 0x9100;
/// VLAN tags we look through.
const MAX_TAGS: usize = 2;
/// IPv6 extension headers we walk before giving up.
const MAX_EXTENSION_HEADERS: usize = 8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;

const BOOTPS: u16 = 67;
const BOOTPC: u16 = 68;
const BOOTREPLY: u8 = 2;
const DHCPV6_CLIENT: u16 = 546;
const DHCPV6_SERVER: u16 = 547;
/// RFC 8415 section 7.3: ADVERTISE (2), REPLY (7), RECONFIGURE (10), RELAY-REPL (13) are sent
/// by servers and relays, never by clients.
const DHCPV6_SERVER_MESSAGES: [u8; 4] = [2, 7, 10, 13];
const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;
const ICMPV6_REDIRECT: u8 = 137;

/// Which client filters are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClientFilters {
    pub(super) dhcpv4: bool,
    pub(super) dhcpv6: bool,
    pub(super) router_advertisement: bool,
    pub(super) redirect: bool,
}

impl ClientFilters {
    const fn any(self) -> bool {
        self.dhcpv4 || self.dhcpv6 || self.router_advertisement || self.redirect
    }
}

/// Applies the client filters to the leading bytes of a frame whose Ethernet header is known
/// to be present.
pub(super) fn check_client_frame(frame: &[u8], filters: ClientFilters) -> Result<(), DropReason> {
    if !filters.any() {
        return Ok(());
    }
    let Some((ethertype, l3)) = network_layer(frame) else {
        return Ok(());
    };
    match ethertype {
        ethertype::IPV4 => check_ipv4(l3, filters),
        ethertype::IPV6 => check_ipv6(l3, filters),
        _ => Ok(()),
    }
}

/// The EtherType after up to [`MAX_TAGS`] VLAN tags and the bytes after it, or `None` for
/// 802.3 length-field frames and frames whose tags are cut short.
fn network_layer(frame: &[u8]) -> Option<(u16, &[u8])> {
    let mut offset = HEADER_LEN - 2;
    for _ in 0..=MAX_TAGS {
        let raw = be16(frame, offset)?;
        match raw {
            TPID_8021Q | TPID_8021AD | TPID_9100 => offset += 4,
            0x0600.. => return Some((raw, frame.get(offset + 2..)?)),
            _ => return None,
        }
    }
    None
}

fn check_ipv4(ip: &[u8], filters: ClientFilters) -> Result<(), DropReason> {
    let truncated = Err(DropReason::TruncatedHeaders);
    let (Some(&version_ihl), Some(&protocol)) = (ip.first(), ip.get(9)) else {
        return truncated;
    };
    let Some(flags_offset) = be16(ip, 6) else {
        return truncated;
    };
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || header_len < 20 {
        return Err(DropReason::MalformedIp);
    }
    // Only the first fragment of an IPv4 datagram carries the UDP header.
    if flags_offset & 0x1fff != 0 || protocol != IPPROTO_UDP || !filters.dhcpv4 {
        return Ok(());
    }
    let Some(udp) = ip.get(header_len..) else {
        return truncated;
    };
    let (Some(src), Some(dst)) = (be16(udp, 0), be16(udp, 2)) else {
        return truncated;
    };
    if src == BOOTPS {
        return Err(DropReason::Dhcpv4ServerFromClient);
    }
    if dst == BOOTPC {
        // RFC 2131: `op` is the first byte of the BOOTP message; 2 is BOOTREPLY.
        match udp.get(8) {
            None => return truncated,
            Some(&BOOTREPLY) => return Err(DropReason::Dhcpv4ServerFromClient),
            Some(_) => {}
        }
    }
    Ok(())
}

fn check_ipv6(ip: &[u8], filters: ClientFilters) -> Result<(), DropReason> {
    let truncated = Err(DropReason::TruncatedHeaders);
    let (Some(&version), Some(&first_next)) = (ip.first(), ip.get(6)) else {
        return truncated;
    };
    if version >> 4 != 6 {
        return Err(DropReason::MalformedIp);
    }
    if ip.len() < 40 {
        return truncated;
    }
    let mut next = first_next;
    let mut offset = 40;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let (Some(&n), Some(&len)) = (ip.get(offset), ip.get(offset + 1)) else {
                    return truncated;
                };
                next = n;
                offset += (usize::from(len) + 1) * 8;
            }
            IPPROTO_AH => {
                let (Some(&n), Some(&len)) = (ip.get(offset), ip.get(offset + 1)) else {
                    return truncated;
                };
                next = n;
                offset += (usize::from(len) + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                let (Some(&n), Some(offset_flags)) = (ip.get(offset), be16(ip, offset + 2)) else {
                    return truncated;
                };
                if offset_flags >> 3 != 0 {
                    // Not the first fragment: no upper-layer header here.
                    return Ok(());
                }
                next = n;
                offset += 8;
            }
            IPPROTO_UDP => return check_udp6(ip.get(offset..), filters),
            IPPROTO_ICMPV6 => return check_icmpv6(ip.get(offset..), filters),
            // ESP, No Next Header, TCP and everything else: nothing the filters look at.
            _ => return Ok(()),
        }
    }
    truncated
}

fn check_udp6(udp: Option<&[u8]>, filters: ClientFilters) -> Result<(), DropReason> {
    if !filters.dhcpv6 {
        return Ok(());
    }
    let truncated = Err(DropReason::TruncatedHeaders);
    let Some(udp) = udp else {
        return truncated;
    };
    let (Some(src), Some(dst)) = (be16(udp, 0), be16(udp, 2)) else {
        return truncated;
    };
    if src == DHCPV6_SERVER {
        return Err(DropReason::Dhcpv6ServerFromClient);
    }
    if dst == DHCPV6_CLIENT || dst == DHCPV6_SERVER {
        // RFC 8415 section 8: `msg-type` is the first byte of every DHCPv6 message.
        match udp.get(8) {
            None => return truncated,
            Some(t) if DHCPV6_SERVER_MESSAGES.contains(t) => {
                return Err(DropReason::Dhcpv6ServerFromClient);
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn check_icmpv6(icmp: Option<&[u8]>, filters: ClientFilters) -> Result<(), DropReason> {
    if !filters.router_advertisement && !filters.redirect {
        return Ok(());
    }
    match icmp.and_then(<[u8]>::first) {
        None => Err(DropReason::TruncatedHeaders),
        Some(&ICMPV6_ROUTER_ADVERTISEMENT) if filters.router_advertisement => {
            Err(DropReason::RouterAdvertisementFromClient)
        }
        Some(&ICMPV6_REDIRECT) if filters.redirect => Err(DropReason::RedirectFromClient),
        Some(_) => Ok(()),
    }
}

fn be16(bytes: &[u8], offset: usize) -> Option<u16> {
    let b = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: ClientFilters = ClientFilters {
        dhcpv4: true,
        dhcpv6: true,
        router_advertisement: true,
        redirect: true,
    };

    fn bytes(hex_text: &str) -> Vec<u8> {
        hex::decode(hex_text.replace(' ', "")).unwrap()
    }

    #[test]
    fn ipv4_later_fragment_is_not_parsed_for_ports() {
        // IPv4, fragment offset 1 (8 bytes), protocol UDP; the "ports" would read 67 -> 68.
        let frame = bytes(
            "ffffffffffff 020000000001 0800 \
             45000030 0000 0001 4011 0000 c6120001 ffffffff \
             0043 0044 0000 0000 02",
        );
        assert_eq!(check_client_frame(&frame, ALL), Ok(()));
        // The same bytes as a first fragment are a DHCP server message.
        let mut first = frame;
        first[14 + 7] = 0;
        assert_eq!(
            check_client_frame(&first, ALL),
            Err(DropReason::Dhcpv4ServerFromClient)
        );
    }

    #[test]
    fn double_tagged_frames_are_looked_through() {
        let frame = bytes(
            "ffffffffffff 020000000001 88a8 0064 8100 00c8 0800 \
             45000030 0000 0000 4011 0000 c6120001 ffffffff \
             0043 0044 0000 0000 02",
        );
        assert_eq!(
            check_client_frame(&frame, ALL),
            Err(DropReason::Dhcpv4ServerFromClient)
        );
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        // Hop-by-hop (8 bytes) then ICMPv6 type 134.
        let frame = bytes(
            "333300000001 020000000001 86dd \
             60000000 0010 00ff fe800000000000000000000000000001 ff020000000000000000000000000001 \
             3a00 000000000000 8600 0000",
        );
        assert_eq!(
            check_client_frame(&frame, ALL),
            Err(DropReason::RouterAdvertisementFromClient)
        );
        // Cut before the ICMPv6 type: the filters cannot decide.
        assert_eq!(
            check_client_frame(&frame[..14 + 40 + 8], ALL),
            Err(DropReason::TruncatedHeaders)
        );
    }

    const IPV6_HEADER_TO_ALL_NODES: &str = "333300000001 020000000001 86dd 60000000 0010";
    const IPV6_ADDRESSES: &str =
        "fe800000000000000000000000000001 ff020000000000000000000000000001";

    #[test]
    fn ipv6_later_fragments_pass_and_first_fragments_are_checked() {
        // Fragment header (next header UDP), offset 1: no UDP header follows.
        let later = bytes(&format!(
            "{IPV6_HEADER_TO_ALL_NODES} 2cff {IPV6_ADDRESSES} 1100 0009 00000001 0223 0222 0000"
        ));
        assert_eq!(check_client_frame(&later, ALL), Ok(()));
        // Offset 0: the UDP header (547 -> 546) is right there.
        let first = bytes(&format!(
            "{IPV6_HEADER_TO_ALL_NODES} 2cff {IPV6_ADDRESSES} 1100 0001 00000001 0223 0222 0000"
        ));
        assert_eq!(
            check_client_frame(&first, ALL),
            Err(DropReason::Dhcpv6ServerFromClient)
        );
    }

    #[test]
    fn overlong_extension_header_chains_are_not_trusted() {
        // Nine destination-options headers in a row, then ICMPv6.
        let chain = "3c00 000000000000 ".repeat(8) + "3a00 000000000000 8600 0000";
        let frame = bytes(&format!(
            "{IPV6_HEADER_TO_ALL_NODES} 3cff {IPV6_ADDRESSES} {chain}"
        ));
        assert_eq!(
            check_client_frame(&frame, ALL),
            Err(DropReason::TruncatedHeaders)
        );
        // Two are walked fine.
        let chain = "3c00 000000000000 3a00 000000000000 8600 0000";
        let frame = bytes(&format!(
            "{IPV6_HEADER_TO_ALL_NODES} 3cff {IPV6_ADDRESSES} {chain}"
        ));
        assert_eq!(
            check_client_frame(&frame, ALL),
            Err(DropReason::RouterAdvertisementFromClient)
        );
    }

    #[test]
    fn wrong_ip_version_is_malformed() {
        let frame = bytes("ffffffffffff 020000000001 0800 65000030 0000 0000 4011 0000");
        assert_eq!(
            check_client_frame(&frame, ALL),
            Err(DropReason::MalformedIp)
        );
        let frame = bytes("ffffffffffff 020000000001 86dd 40000000 0000 11ff");
        assert_eq!(
            check_client_frame(&frame, ALL),
            Err(DropReason::MalformedIp)
        );
    }

    #[test]
    fn udp_header_cut_off_is_truncated() {
        let frame = bytes(
            "ffffffffffff 020000000001 0800 \
             45000030 0000 0000 4011 0000 c6120001 ffffffff 00",
        );
        assert_eq!(
            check_client_frame(&frame, ALL),
            Err(DropReason::TruncatedHeaders)
        );
    }

    #[test]
    fn disabled_filters_pass_everything() {
        let none = ClientFilters {
            dhcpv4: false,
            dhcpv6: false,
            router_advertisement: false,
            redirect: false,
        };
        let frame = bytes("ffffffffffff 020000000001 0800 45");
        assert_eq!(check_client_frame(&frame, none), Ok(()));
    }
}
