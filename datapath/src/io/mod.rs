//! UDP I/O backends behind one small trait: io_uring on Linux (in `sys`) and quinn-udp everywhere.
