//! Byte layouts the io_uring backend writes and parses: `sockaddr_in`/`sockaddr_in6` and
//! control messages. Pure safe code over byte slices, so received bytes can never cause
//! undefined behaviour: a malformed or truncated message parses as "absent".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Bytes of a `sockaddr_in6`, the larger of the two address layouts.
pub(crate) const SOCKADDR_LEN: usize = 28;

/// Room for every control message we send or receive: UDP_SEGMENT or UDP_GRO (int), TOS or
/// TCLASS (int), and an `in6_pktinfo`; 88 bytes on 64-bit, rounded up.
pub(crate) const CONTROL_LEN: usize = 128;

/// A `sockaddr_in6`-sized, suitably aligned address buffer.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct SockAddrBuf(pub(crate) [u8; SOCKADDR_LEN]);

/// A control-message buffer aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct ControlBuf(pub(crate) [u8; CONTROL_LEN]);

const CMSG_HDR: usize = size_of::<libc::cmsghdr>();
const CMSG_ALIGN: usize = size_of::<usize>();

// Our layout of `cmsghdr`: a `size_t` length, then level and type as `c_int`.
const _: () = assert!(CMSG_HDR == size_of::<usize>() + 2 * size_of::<libc::c_int>());

const fn cmsg_align(n: usize) -> usize {
    (n + CMSG_ALIGN - 1) & !(CMSG_ALIGN - 1)
}

/// Writes `addr` as a `sockaddr_in` or `sockaddr_in6`; returns the length to pass the kernel.
pub(crate) fn encode_sockaddr(addr: SocketAddr, out: &mut SockAddrBuf) -> usize {
    out.0 = [0; SOCKADDR_LEN];
    match addr {
        SocketAddr::V4(a) => {
            out.0[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            out.0[2..4].copy_from_slice(&a.port().to_be_bytes());
            out.0[4..8].copy_from_slice(&a.ip().octets());
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            out.0[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            out.0[2..4].copy_from_slice(&a.port().to_be_bytes());
            out.0[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            out.0[8..24].copy_from_slice(&a.ip().octets());
            out.0[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            size_of::<libc::sockaddr_in6>()
        }
    }
}

/// Parses a `sockaddr_in` or `sockaddr_in6` as the kernel wrote it.
pub(crate) fn decode_sockaddr(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    if family == libc::AF_INET as u16 {
        let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
        Some(SocketAddrV4::new(Ipv4Addr::from(ip), port).into())
    } else if family == libc::AF_INET6 as u16 {
        let flowinfo = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(bytes.get(24..28)?.try_into().ok()?);
        Some(SocketAddrV6::new(Ipv6Addr::from(ip), port, flowinfo, scope).into())
    } else {
        None
    }
}

/// Appends control messages to a [`ControlBuf`].
pub(crate) struct CmsgWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> CmsgWriter<'a> {
    pub(crate) fn new(buf: &'a mut ControlBuf) -> Self {
        buf.0 = [0; CONTROL_LEN];
        Self {
            buf: &mut buf.0,
            len: 0,
        }
    }

    /// Appends one message; returns false (writing nothing) if it does not fit.
    pub(crate) fn push(&mut self, level: i32, kind: i32, data: &[u8]) -> bool {
        let space = CMSG_HDR + cmsg_align(data.len());
        let Some(out) = self.buf.get_mut(self.len..self.len + space) else {
            return false;
        };
        let cmsg_len = CMSG_HDR + data.len();
        out[..size_of::<usize>()].copy_from_slice(&cmsg_len.to_ne_bytes());
        let at = size_of::<usize>();
        out[at..at + 4].copy_from_slice(&level.to_ne_bytes());
        out[at + 4..at + 8].copy_from_slice(&kind.to_ne_bytes());
        out[CMSG_HDR..CMSG_HDR + data.len()].copy_from_slice(data);
        self.len += space;
        true
    }

    /// Bytes written, for `msg_controllen`.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Writes the control messages for one send: GSO segment size, ECN, source address.
///
/// `v4_destination` (an IPv4 or v4-mapped destination) picks IP_TOS over IPV6_TCLASS: for a
/// v4-mapped send on a dual-stack socket Linux runs the IPv4 path, which ignores IPV6_TCLASS.
/// The source address picks IP_PKTINFO or IPV6_PKTINFO by its own family (the IPv4 path
/// accepts both).
pub(crate) fn encode_send_control(
    out: &mut ControlBuf,
    segment_size: Option<u16>,
    ecn: Option<u8>,
    src_ip: Option<IpAddr>,
    v4_destination: bool,
) -> usize {
    let mut w = CmsgWriter::new(out);
    if let Some(size) = segment_size {
        w.push(libc::SOL_UDP, libc::UDP_SEGMENT, &size.to_ne_bytes());
    }
    if let Some(ecn) = ecn {
        let tos = libc::c_int::from(ecn & 0b11);
        if v4_destination {
            w.push(libc::IPPROTO_IP, libc::IP_TOS, &tos.to_ne_bytes());
        } else {
            w.push(libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &tos.to_ne_bytes());
        }
    }
    match src_ip {
        Some(IpAddr::V4(ip)) => {
            // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
            let mut info = [0u8; 12];
            info[4..8].copy_from_slice(&ip.octets());
            w.push(libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
        }
        Some(IpAddr::V6(ip)) => {
            // struct in6_pktinfo { in6_addr ipi6_addr; unsigned ipi6_ifindex; }
            let mut info = [0u8; 20];
            info[..16].copy_from_slice(&ip.octets());
            w.push(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info);
        }
        None => {}
    }
    w.len()
}

/// What the receive control messages said.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecvControl {
    /// UDP_GRO: the size of each coalesced datagram.
    pub(crate) gro_size: Option<usize>,
    /// IP_TOS / IPV6_TCLASS, ECN bits only.
    pub(crate) ecn: Option<u8>,
    /// IP_PKTINFO / IPV6_PKTINFO: the header's destination address.
    pub(crate) dst_ip: Option<IpAddr>,
}

/// Parses received control messages; malformed messages end the walk.
pub(crate) fn decode_recv_control(mut bytes: &[u8]) -> RecvControl {
    let mut out = RecvControl::default();
    while bytes.len() >= CMSG_HDR {
        let Ok(len) = bytes[..size_of::<usize>()]
            .try_into()
            .map(usize::from_ne_bytes)
        else {
            break;
        };
        if len < CMSG_HDR || len > bytes.len() {
            break;
        }
        let at = size_of::<usize>();
        let level = i32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let kind = i32::from_ne_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let data = &bytes[CMSG_HDR..len];
        let int = || {
            data.get(..4)
                .map(|d| i32::from_ne_bytes([d[0], d[1], d[2], d[3]]))
        };
        match (level, kind) {
            (libc::SOL_UDP, libc::UDP_GRO) => {
                out.gro_size = int()
                    .and_then(|v| usize::try_from(v).ok())
                    .filter(|&v| v > 0);
            }
            // IP_TOS arrives as one byte; IPV6_TCLASS as an int.
            (libc::IPPROTO_IP, libc::IP_TOS) => out.ecn = data.first().map(|tos| tos & 0b11),
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => out.ecn = int().map(|v| (v & 0b11) as u8),
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                if let Some(addr) = data.get(8..12) {
                    out.dst_ip = Some(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into());
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                if let Some(Ok(addr)) = data.get(..16).map(<[u8; 16]>::try_from) {
                    let ip = Ipv6Addr::from(addr);
                    out.dst_ip = Some(match ip.to_ipv4_mapped() {
                        Some(v4) => v4.into(),
                        None => ip.into(),
                    });
                }
            }
            _ => {}
        }
        let step = cmsg_align(len);
        if step >= bytes.len() {
            break;
        }
        bytes = &bytes[step..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_round_trip() {
        let mut buf = SockAddrBuf([0; SOCKADDR_LEN]);
        for addr in [
            "127.0.0.1:4433".parse::<SocketAddr>().unwrap(),
            "[fd00::1%7]:65535".parse().unwrap(),
        ] {
            let len = encode_sockaddr(addr, &mut buf);
            assert_eq!(decode_sockaddr(&buf.0[..len]), Some(addr));
        }
        assert_eq!(decode_sockaddr(&[0xff; 3]), None);
        assert_eq!(decode_sockaddr(&[]), None);
    }

    #[test]
    fn cmsg_layout_matches_libc_macros() {
        let mut buf = ControlBuf([0; CONTROL_LEN]);
        let len = encode_send_control(&mut buf, Some(1200), Some(2), None, true);
        // SAFETY: CMSG_SPACE and CMSG_LEN are pure arithmetic.
        let (space, clen) = unsafe { (libc::CMSG_SPACE(2), libc::CMSG_LEN(2)) };
        // SAFETY: as above.
        let space_int = unsafe { libc::CMSG_SPACE(4) };
        assert_eq!(len, (space + space_int) as usize);
        assert_eq!(
            usize::from_ne_bytes(buf.0[..8].try_into().unwrap()),
            clen as usize
        );
    }

    #[test]
    fn send_control_parses_back() {
        let mut buf = ControlBuf([0; CONTROL_LEN]);
        // The receive parser reads the TOS and PKTINFO layouts we send.
        let src: IpAddr = "198.18.0.1".parse().unwrap();
        let len = encode_send_control(&mut buf, None, Some(3), Some(src), true);
        let parsed = decode_recv_control(&buf.0[..len]);
        // in_pktinfo carries the source in ipi_spec_dst; ipi_addr (what a receiver reads as
        // the destination) stays zero.
        assert_eq!(parsed.dst_ip, Some(Ipv4Addr::UNSPECIFIED.into()));
        assert_eq!(parsed.ecn, Some(3));
        let src6: IpAddr = "fd00::1".parse().unwrap();
        let len = encode_send_control(&mut buf, None, Some(1), Some(src6), false);
        let parsed = decode_recv_control(&buf.0[..len]);
        assert_eq!(
            parsed.dst_ip,
            Some(src6),
            "in6_pktinfo carries the address itself"
        );
        assert_eq!(parsed.ecn, Some(1), "IPV6_TCLASS for an IPv6 destination");
    }

    #[test]
    fn garbage_control_parses_as_absent() {
        assert_eq!(decode_recv_control(&[0xff; 40]), RecvControl::default());
        assert_eq!(decode_recv_control(&[1, 0, 0]), RecvControl::default());
        let mut zero_len = [0u8; 32];
        zero_len[0] = 0;
        assert_eq!(decode_recv_control(&zero_len), RecvControl::default());
    }
}
