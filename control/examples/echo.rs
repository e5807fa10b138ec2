//! The whole softlan shape in one small program, on loopback:
//!
//! - a **server datapath thread** runs the `Runner` loop (UDP backend + QUIC driver) and never
//!   blocks on anything but its own `wait`;
//! - a **control thread** (tokio, started with `lanparty_control::runtime::spawn`) gets events
//!   from it (connected, control bytes, closed) and sends commands down (write control bytes);
//!   its task echoes every control-stream message back;
//! - a **client** connects with the server's certificate fingerprint pinned, sends a few lines
//!   on the control stream and prints the echoes.
//!
//! Run it with `cargo run -p lanparty-control --example echo`.

use std::collections::VecDeque;
use std::error::Error;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanparty_control::runtime::{self, Capacity, DatapathSide, SendError};
use lanparty_datapath::io::open_best;
use lanparty_datapath::quic::tls::{self, ClientTrust, Fingerprint, ServerIdentity};
use lanparty_datapath::quic::{ConnId, Driver, DriverConfig, Event};
use lanparty_datapath::runner::Runner;

/// Events going up, from the datapath thread to the control thread.
#[derive(Debug)]
enum Up {
    Connected { conn: ConnId, remote: SocketAddr },
    Control { conn: ConnId, bytes: Bytes },
    Closed { conn: ConnId, reason: String },
}

/// Commands coming down, from the control thread to the datapath thread.
#[derive(Debug)]
enum Down {
    WriteControl { conn: ConnId, bytes: Bytes },
}

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> Result<()> {
    // The server's identity: a self-signed certificate kept in a state directory.
    let state_dir = std::env::temp_dir().join(format!("lanparty-echo-{}", std::process::id()));
    let identity = ServerIdentity::load_or_generate(&state_dir, &["localhost".to_owned()])?;
    let pin = identity.fingerprint();
    let driver = Driver::new(DriverConfig::default(), Some(tls::server_crypto(identity)?));
    let runner = Runner::new(driver, open_best("127.0.0.1:0".parse()?)?);
    let server = runner.local_addr();
    println!(
        "server: {} on {server}, fingerprint {pin}",
        runner.backend_kind()
    );

    // The control thread: every command it sends wakes the datapath loop.
    let waker = runner.waker();
    let (datapath_side, control) = runtime::spawn(
        "control",
        Capacity::default(),
        move || waker.wake(),
        |mut ctl| async move {
            while let Some(event) = ctl.recv().await {
                match event {
                    Up::Connected { conn, remote } => println!("control: {conn} from {remote}"),
                    Up::Control { conn, bytes } => {
                        if ctl.send(Down::WriteControl { conn, bytes }).await.is_err() {
                            break;
                        }
                    }
                    Up::Closed { conn, reason } => {
                        println!("control: {conn} closed: {reason}");
                        break; // one client is enough for this example
                    }
                }
            }
        },
    )?;
    let datapath = thread::spawn(move || server_datapath(runner, datapath_side));

    let result = client(server, pin, &["hello\n", "from the\n", "client\n"]);
    control.join().map_err(|_| "control thread panicked")??;
    datapath.join().map_err(|_| "datapath thread panicked")??;
    let _ = std::fs::remove_dir_all(&state_dir);
    result
}

/// The server's datapath loop: UDP <-> driver, events up, commands down. Ends when the control
/// thread does.
fn server_datapath(mut runner: Runner, mut control: DatapathSide<Up, Down>) -> Result<()> {
    // Events the control thread had no room for yet (a real relay would also stop reading
    // the control stream until there is room again).
    let mut backlog = VecDeque::new();
    loop {
        let now = Instant::now();
        runner.receive(now);
        while let Some(event) = runner.driver().poll_event() {
            backlog.push_back(match event {
                Event::Connected { conn, remote, .. } => Up::Connected { conn, remote },
                Event::ControlBytes { conn, bytes } => Up::Control { conn, bytes },
                Event::Closed { conn, reason, .. } => Up::Closed { conn, reason },
                _ => continue, // DATAGRAMs: a relay would switch the Ethernet frame here
            });
        }
        while let Some(up) = backlog.pop_front() {
            match control.try_send(up) {
                Ok(()) => {}
                Err(SendError::Full(up)) => {
                    backlog.push_front(up);
                    break;
                }
                Err(_) => break, // the control thread is gone; try_recv below notices
            }
        }
        loop {
            match control.try_recv() {
                Ok(Some(Down::WriteControl { conn, bytes })) => {
                    if let Err(e) = runner.driver().write_control(conn, &bytes) {
                        eprintln!("server: cannot echo on {conn}: {e}");
                    }
                }
                Ok(None) => break,
                Err(()) => {
                    runner.transmit(now)?; // last words (a CONNECTION_CLOSE, say)
                    return Ok(());
                }
            }
        }
        runner.transmit(now)?;
        // A command wakes us through the waker; the tick retries the backlog.
        runner.wait(Some(now + Duration::from_millis(100)))?;
    }
}

/// Connects with `pin`, sends `lines` on the control stream, prints the echoes, closes.
fn client(server: SocketAddr, pin: Fingerprint, lines: &[&str]) -> Result<()> {
    let mut runner = Runner::new(
        Driver::new(DriverConfig::default(), None),
        open_best("127.0.0.1:0".parse()?)?,
    );
    let config = tls::client_config(&ClientTrust::Pinned(pin))?;
    let start = Instant::now();
    let conn = runner
        .driver()
        .connect(start, server, "localhost", config)?;
    let (mut echoed, mut lines_back) = (Vec::new(), 0);
    let mut closed = None;
    while closed.is_none() {
        let now = Instant::now();
        if now - start > Duration::from_secs(10) {
            return Err("no echo within 10 s".into());
        }
        runner.receive(now);
        while let Some(event) = runner.driver().poll_event() {
            match event {
                Event::Connected { .. } => {
                    for line in lines {
                        runner.driver().write_control(conn, line.as_bytes())?;
                    }
                }
                Event::ControlBytes { bytes, .. } => {
                    echoed.extend_from_slice(&bytes);
                    while let Some(end) = echoed.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = echoed.drain(..=end).collect();
                        println!(
                            "client: echo {:?}",
                            String::from_utf8_lossy(&line).trim_end()
                        );
                        lines_back += 1;
                    }
                    if lines_back == lines.len() {
                        runner.driver().close(now, conn, 0, "thanks");
                    }
                }
                Event::Closed { reason, .. } => closed = Some(reason),
                _ => {}
            }
        }
        runner.transmit(now)?;
        runner.wait(Some(now + Duration::from_millis(100)))?;
    }
    if lines_back == lines.len() {
        Ok(())
    } else {
        Err(format!("closed after {lines_back} echoes: {closed:?}").into())
    }
}
