//! The adapter offload code on hostile bytes: the coalescer takes frames that arrive from the
//! room (peers choose them), the segmenter takes what the local kernel hands up with a
//! virtio-net header. Neither may panic, a super-packet the coalescer builds must segment again
//! within the frame limit, and every segment fits.
//!
//! Input: `[link, max_len byte, records ...]`, each record `[length, bytes ...]`; a record
//! whose first byte is odd is also run through the segmenter as `[virtio header][packet]`.
#![no_main]

use lanparty_datapath::offload::{Coalescer, Link, Push, Segmenter, VNET_HDR_LEN, VnetHdr};
use libfuzzer_sys::fuzz_target;

fn segment_all(bytes: &[u8], link: Link, max_len: usize) {
    let Some((head, packet)) = bytes.split_at_checked(VNET_HDR_LEN) else {
        return;
    };
    let Ok(hdr) = VnetHdr::parse(head) else {
        return;
    };
    let mut packet = packet.to_vec();
    let Ok(mut seg) = Segmenter::new(&hdr, &mut packet, link, max_len) else {
        return;
    };
    let mut out = vec![0u8; 65_536];
    let mut n = 0;
    while let Some(result) = seg.next_segment(&packet, &mut out) {
        let Ok(len) = result else { break };
        assert!(len <= out.len());
        n += 1;
        assert!(n <= 65_536, "a segmenter that never ends");
    }
    assert!(seg.is_done() || n > 0);
}

fuzz_target!(|data: &[u8]| {
    let Some((&[link, max], mut rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let link = if link & 1 == 0 { Link::Ethernet } else { Link::Ip };
    let max_len = 600 + usize::from(max) * 8;
    let mut coalescer = Coalescer::new(link);
    let mut taken = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len).min(tail.len());
        let (record, tail) = tail.split_at(len);
        rest = tail;
        if record.first().is_some_and(|b| b & 1 == 1) {
            segment_all(record, link, max_len);
        }
        match coalescer.push(record) {
            Push::Merged | Push::Held | Push::Pass => {}
            Push::Flush => {
                if let Some(out) = coalescer.take() {
                    taken.push(out.to_vec());
                }
                assert_ne!(coalescer.push(record), Push::Flush, "flushed twice in a row");
            }
        }
    }
    if let Some(out) = coalescer.take() {
        taken.push(out.to_vec());
    }
    for out in &taken {
        assert!(out.len() >= VNET_HDR_LEN);
        // What the coalescer writes to the device must itself be a valid GSO packet.
        segment_all(out, link, 65_535);
    }
});
