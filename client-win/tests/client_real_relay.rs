//! The `lanparty-client` binary against the real `lanparty-relay` binary.
//!
//! Namespace `X` runs the relay (on its own loopback) and the client binary with a TAP and a
//! static address; a library client with a TUN sits in namespace `Y` (its UDP socket in `X`).
//! A ping from `Y` to the TAP's address crosses the real relay, the TUN's emulated ARP and the
//! binary's TAP; SIGTERM then makes the binary say goodbye, remove its TAP and exit 0 within
//! 2 s.
//!
//! The relay binary is taken from this test's target directory, built with `cargo build -p
//! lanparty-relay` when missing or older than its sources; if it is still absent, the test says
//! so and skips. Needs root (namespaces, TUN/TAP).
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ClientSpec, SECRET};
use lanparty_client::adapter::AdapterKind;
use lanparty_client::config::Addressing;
use lanparty_control::link::JoinLink;
use lanparty_datapath::Mac;
use lanparty_datapath::quic::tls::Fingerprint;
use lanparty_datapath::sys::netns::{self, Netns};

const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_lanparty-client");

/// The newest modification time of the files under `dir`.
fn newest_mtime(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().ok()?.modified().ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// `target/<profile>/lanparty-relay`, built with `cargo build -p lanparty-relay` when it is
/// missing or older than the sources of the relay and the crates below it. (Building it every
/// time would thrash the target directory: the relay alone unifies dependency features
/// differently from this test.)
fn relay_binary() -> Option<PathBuf> {
    // This test runs as target/<profile>/deps/client_real_relay-<hash>.
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?.to_owned();
    let path = profile_dir.join("lanparty-relay");
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let sources = ["relay", "control", "datapath", "Cargo.lock"]
        .iter()
        .filter_map(|d| {
            let p = workspace.join(d);
            if p.is_dir() {
                newest_mtime(&p)
            } else {
                p.metadata().ok()?.modified().ok()
            }
        })
        .max();
    let built_at = path.metadata().and_then(|m| m.modified()).ok();
    if built_at.is_none() || sources > built_at {
        eprintln!("lanparty-relay is missing or stale; running cargo build -p lanparty-relay");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "lanparty-relay"]);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        if !build.status().is_ok_and(|s| s.success()) {
            eprintln!("cargo build -p lanparty-relay failed");
        }
    }
    path.exists().then_some(path)
}

/// A child process killed (by its PID) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collects a child's stderr lines on a thread.
fn collect_lines(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

fn wait_for_line(lines: &Mutex<Vec<String>>, timeout: Duration, what: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + timeout;
    while !lines.lock().unwrap().iter().any(|l| what(l)) {
        assert!(
            Instant::now() < deadline,
            "no such line within {timeout:?}: {:?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn client_binary_crosses_the_real_relay_and_exits_cleanly_on_sigterm() {
    let test = "client_binary_crosses_the_real_relay_and_exits_cleanly_on_sigterm";
    if !netns::require_root(test) {
        return;
    }
    let Some(relay_bin) = relay_binary() else {
        eprintln!("SKIP {test}: the lanparty-relay binary is absent and could not be built");
        return;
    };
    let dir = std::env::temp_dir().join(format!("lp-client-real-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let x = Netns::create("rl").unwrap();

    // The real relay, on X's loopback.
    let mut relay = x.command(&relay_bin);
    relay
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.join("relay"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut relay = Proc(relay.spawn().expect("lanparty-relay starts"));
    let mut link = None;
    for line in BufReader::new(relay.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if let Some(text) = line.strip_prefix("join link: ") {
            link = Some(text.to_owned());
            break;
        }
    }
    let link = link.expect("the relay prints a join link");
    let parsed: JoinLink = link.parse().unwrap();
    let relay_addr: SocketAddr = format!("{}:{}", parsed.host, parsed.port).parse().unwrap();

    // The client binary in X: TAP, static address, MAC from its state directory.
    let state = dir.join("client");
    let mut client = x.command(CLIENT_BIN);
    client
        .arg(&link)
        .args([
            "--room",
            "party",
            "--adapter",
            "tap",
            "--name",
            "lpcl0",
            "--address",
            "198.18.6.1/24",
            "--display-name",
            "alice",
            "--state-dir",
        ])
        .arg(&state)
        .env("LANPARTY_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut client = Proc(client.spawn().expect("lanparty-client starts"));
    let lines = collect_lines(client.0.stderr.take().unwrap());
    wait_for_line(&lines, Duration::from_secs(10), |l| {
        l.contains("joined room party as MAC") && l.contains("using static address 198.18.6.1/24")
    });
    let mac: Mac = std::fs::read_to_string(state.join("mac"))
        .expect("the client remembers its MAC")
        .trim()
        .parse()
        .unwrap();
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&format!("as MAC {mac} with 0 peers"))),
        "{:?}",
        lines.lock().unwrap()
    );

    // A library client with a TUN in Y, its socket in X next to the relay.
    let pin = Fingerprint(parsed.pin.expect("a pinned link"));
    let mut spec = ClientSpec::new(AdapterKind::Tun, "02:00:5e:20:00:02", relay_addr, pin);
    spec.addressing = Addressing::Static {
        addr: Ipv4Addr::new(198, 18, 6, 2),
        prefix: 24,
    };
    spec.socket_ns = Some(&x);
    let tun = spec.spawn();
    tun.wait_for_status(Duration::from_secs(10), |l| {
        l.contains("with 1 peer") && l.contains("using static address 198.18.6.2/24")
    });
    wait_for_line(&lines, Duration::from_secs(5), |l| {
        l.contains("with 1 peer")
    });

    // Y -> TUN -> emulator (ARP) -> real relay -> binary -> TAP -> X's kernel, and back.
    netns::ping(
        &tun.ns,
        IpAddr::V4(Ipv4Addr::new(198, 18, 6, 1)),
        Duration::from_secs(5),
    )
    .expect("the ping crosses the real relay");

    // SIGTERM: goodbye, adapter removed, exit 0 within 2 s.
    let started = Instant::now();
    let ok = Command::new("kill")
        .args(["-TERM", &client.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = loop {
        if let Some(status) = client.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still running 2 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        x.ip(&["link", "show", "lpcl0"]).is_err(),
        "the TAP outlived the client"
    );
    wait_for_line(&lines, Duration::from_secs(1), |l| {
        l.contains(": disconnected")
    });
    // The relay heard the goodbye: the other member sees the room empty at once.
    tun.wait_for_status(Duration::from_secs(2), |l| l.contains("with 0 peers"));
    tun.stop_and_check_removed();
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}
