//! Arbitrary bytes as an Ethernet frame: a checked view never panics on any accessor, and
//! its header re-emits to the same bytes for untagged frames.
#![no_main]

use lanparty_datapath::wire::ethernet::{Frame, HEADER_LEN, Repr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = Frame::new_checked(data) else {
        assert!(data.len() < HEADER_LEN + 4);
        return;
    };
    let _ = (frame.dst(), frame.src(), frame.vlan_tci(), frame.vlan_id());
    let _ = (frame.type_or_length(), frame.ethertype());
    assert_eq!(frame.header_len() + frame.payload().len(), data.len());
    assert_eq!(frame.as_bytes(), data);
    let repr = Repr::parse(&frame);
    if !frame.has_vlan_tag() {
        let mut header = [0u8; HEADER_LEN];
        repr.emit(&mut header);
        assert_eq!(&header[..], &data[..HEADER_LEN]);
    }
    let mut owned = data.to_vec();
    let mut frame = Frame::new_checked(&mut owned[..]).expect("checked once already");
    let (dst, src) = (frame.dst(), frame.src());
    frame.set_dst(src);
    frame.set_src(dst);
    let _ = frame.payload_mut();
});
