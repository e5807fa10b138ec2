//! Fuzzes the control-stream decoder: arbitrary bytes, fed in pieces whose sizes come from the
//! input, must never panic, never overfill the buffer, and every message that decodes must be
//! valid and survive an encode/decode round trip.

#![no_main]

use lanparty_control::codec::{Decoder, MAX_BUFFER, decode_body, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the piece size (1..=256), so one corpus explores many chunkings.
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first) + 1;
    let mut decoder = Decoder::new();
    for chunk in stream.chunks(piece) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let taken = decoder.push(rest);
            assert!(decoder.buffered() <= MAX_BUFFER);
            rest = &rest[taken..];
            loop {
                match decoder.poll() {
                    Ok(Some(msg)) => {
                        assert_eq!(msg.validate(), Ok(()));
                        let bytes = encode(&msg).expect("a decoded message re-encodes");
                        let again = decode_body(&bytes[4..]).expect("re-encoded message decodes");
                        assert_eq!(again, msg);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        assert!(decoder.is_poisoned());
                        assert_eq!(decoder.push(b"x"), 0);
                        return;
                    }
                }
            }
            if taken == 0 {
                // Unreachable: a full buffer holds a complete frame, which poll consumed.
                return;
            }
        }
    }
});
