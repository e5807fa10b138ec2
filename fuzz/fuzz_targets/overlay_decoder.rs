//! Arbitrary bytes as an overlay datagram: decoding never panics, and what decodes re-encodes
//! to the same bytes.
#![no_main]

use lanparty_datapath::wire::overlay::Datagram;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(datagram) = Datagram::new_checked(data) else {
        return;
    };
    let header = datagram.header();
    assert!(!datagram.payload().is_empty());
    assert_eq!(header.len() + datagram.payload().len(), data.len());
    let mut encoded = vec![0; header.len()];
    header.emit(&mut encoded);
    encoded.extend_from_slice(datagram.payload());
    assert_eq!(encoded, data);
    if let Some(leading) = datagram.leading_frame_bytes() {
        assert_eq!(leading, datagram.payload());
    }
});
