//! `lanparty-relay`: the public hub that admits peers into rooms and switches their Ethernet
//! frames as QUIC DATAGRAMs. The program lives in the library ([`lanparty_relay::cli`]).

fn main() -> std::process::ExitCode {
    lanparty_relay::cli::main()
}
