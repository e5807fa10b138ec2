//! Control messages (hello, welcome, reject, peer joined/left, stats, disconnect) and their validation.
