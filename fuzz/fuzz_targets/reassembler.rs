//! A reassembler driven by a sequence of datagrams from the input, with a fake clock: it never
//! panics and never holds more memory than its caps (in all, and for the sender of each
//! fragment).
//!
//! Input: records of `[source, clock step in ms, length, datagram bytes ...]`.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use lanparty_datapath::frag::{Reassembler, ReassemblyConfig};
use lanparty_datapath::wire::overlay::{Datagram, Header};
use libfuzzer_sys::fuzz_target;

const SOURCES: u8 = 4;

fuzz_target!(|data: &[u8]| {
    let config = ReassemblyConfig {
        timeout: Duration::from_millis(500),
        per_sender_bytes: 4096,
        total_bytes: 10_000,
        max_frame_len: 3000,
    };
    let mut r = Reassembler::new(config);
    let start = Instant::now();
    let mut now = start;
    let mut rest = data;
    while let Some((&[source, step, len], tail)) = rest.split_first_chunk::<3>() {
        let len = usize::from(len).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        rest = tail;
        now += Duration::from_millis(u64::from(step) * 4);
        if r.poll_timeout().is_some_and(|t| t <= now) {
            r.handle_timeout(now);
            assert!(r.poll_timeout().is_none_or(|t| t > now));
        }
        let source = source % SOURCES;
        let origin = match Datagram::new_checked(datagram).map(|d| d.header()) {
            Ok(Header::Fragment { origin, .. }) => Some(origin),
            _ => None,
        };
        if let Some(frame) = r.handle_fragment(now, source, Bytes::copy_from_slice(datagram)) {
            assert!(!frame.is_empty());
        }
        assert!(r.memory() <= config.total_bytes);
        if let Some(origin) = origin {
            assert!(r.sender_memory(source, origin) <= config.per_sender_bytes);
        }
    }
    r.handle_timeout(now + config.timeout);
    assert_eq!(r.memory(), 0);
    assert_eq!(r.partial_frames(), 0);
});
