//! The Internet checksum (RFC 1071), as IPv4, ICMP, ICMPv6, UDP and TCP use it.

/// Adds `data` as big-endian 16-bit words to a running one's-complement `sum` (an odd last
/// byte is padded with zero, RFC 1071 section 4.1). Fold the result with [`finish`].
pub fn add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    // Fold early so a caller summing many buffers never overflows.
    (sum & 0xffff) + (sum >> 16)
}

/// Folds a running sum to 16 bits and complements it: the value to put in a checksum field.
pub fn finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum of `data`.
pub fn internet(data: &[u8]) -> u16 {
    finish(add(0, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2, complement 0x220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet(&data), 0x220d);
    }

    #[test]
    fn a_packet_with_its_checksum_sums_to_zero() {
        let mut data = vec![
            0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x00, 0x00, 0x40, 0x11, 0, 0, 198,
        ];
        data.extend_from_slice(&[18, 0, 1, 198, 18, 0, 2, 0x7f]);
        let c = internet(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(internet(&data), 0);
    }

    #[test]
    fn sums_of_pieces_equal_the_sum_of_the_whole() {
        let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let (a, b) = data.split_at(1000);
        assert_eq!(finish(add(add(0, a), b)), internet(&data));
    }
}
