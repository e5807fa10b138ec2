//! Arbitrary bytes as an Ethernet frame through the TCP MSS clamp: it never panics, changes
//! nothing unless it reports a clamp, and clamping twice changes nothing more.
#![no_main]

use lanparty_datapath::budget::{Budget, ClampOutcome, MIN_ROOM_BUDGET, clamp_mss};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[hi, lo], frame)) = data.split_first_chunk::<2>() else {
        return;
    };
    let budget = Budget::new(MIN_ROOM_BUDGET + usize::from(u16::from_be_bytes([hi, lo]) % 9000))
        .expect("at least the minimum");
    let mut frame = frame.to_vec();
    let before = frame.clone();
    match clamp_mss(&mut frame, budget) {
        ClampOutcome::Clamped { from, to } => {
            assert!(to < from);
            assert_ne!(frame, before);
            let once = frame.clone();
            assert_eq!(
                clamp_mss(&mut frame, budget),
                ClampOutcome::AlreadyFits { mss: to }
            );
            assert_eq!(frame, once);
        }
        _ => assert_eq!(frame, before),
    }
});
