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

/// A temporary directory removed when dropped, even when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lp-client-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

/// Starts the real relay on `ns`'s loopback; returns it and its join link.
fn spawn_relay(ns: &Netns, relay_bin: &std::path::Path, dir: &std::path::Path) -> (Proc, String) {
    let mut relay = ns.command(relay_bin);
    relay
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.join("relay"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut relay = Proc(relay.spawn().expect("lanparty-relay starts"));
    let stdout = relay.0.stdout.take().unwrap();
    let link = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("join link: ").map(str::to_owned))
        .expect("the relay prints a join link");
    (relay, link)
}

/// Starts the client binary in `ns` with `args` and the secret; returns it and its stderr
/// lines.
fn spawn_client(ns: &Netns, args: &[&str], secret: &str) -> (Proc, Arc<Mutex<Vec<String>>>) {
    let mut client = ns.command(CLIENT_BIN);
    client
        .args(args)
        .env("LANPARTY_SECRET", secret)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut client = Proc(client.spawn().expect("lanparty-client starts"));
    let lines = collect_lines(client.0.stderr.take().unwrap());
    (client, lines)
}

/// Waits up to `timeout` for the process to exit.
fn wait_exit(proc: &mut Proc, timeout: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < timeout,
            "still running after {timeout:?}"
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
    let dir = TempDir::new("real");
    let x = Netns::create("rl").unwrap();

    let (relay, link) = spawn_relay(&x, &relay_bin, &dir);
    let parsed: JoinLink = link.parse().unwrap();
    let relay_addr: SocketAddr = format!("{}:{}", parsed.host, parsed.port).parse().unwrap();

    // The client binary in X: TAP, static address, MAC from its state directory.
    let state = dir.join("client");
    let state_arg = state.display().to_string();
    let (mut client, lines) = spawn_client(
        &x,
        &[
            &link,
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
            &state_arg,
        ],
        SECRET,
    );
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
    let ok = Command::new("kill")
        .args(["-TERM", &client.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = wait_exit(&mut client, Duration::from_secs(2));
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
}

#[test]
fn client_binary_stops_on_a_rejected_secret_and_removes_its_adapter() {
    let test = "client_binary_stops_on_a_rejected_secret_and_removes_its_adapter";
    if !netns::require_root(test) {
        return;
    }
    let Some(relay_bin) = relay_binary() else {
        eprintln!("SKIP {test}: the lanparty-relay binary is absent and could not be built");
        return;
    };
    let dir = TempDir::new("reject");
    let x = Netns::create("rj").unwrap();
    let (_relay, link) = spawn_relay(&x, &relay_bin, &dir);
    let parsed: JoinLink = link.parse().unwrap();
    let relay_addr: SocketAddr = format!("{}:{}", parsed.host, parsed.port).parse().unwrap();
    // The first member creates room `party` with the right secret.
    let mut spec = ClientSpec::new(
        AdapterKind::Tap,
        "02:00:5e:30:00:01",
        relay_addr,
        Fingerprint(parsed.pin.unwrap()),
    );
    spec.addressing = Addressing::Static {
        addr: Ipv4Addr::new(198, 18, 7, 1),
        prefix: 24,
    };
    spec.socket_ns = Some(&x);
    let first = spec.spawn();
    first.wait_for_status(Duration::from_secs(10), |l| l.contains("joined room party"));

    let state_arg = dir.join("client").display().to_string();
    let (mut client, lines) = spawn_client(
        &x,
        &[
            &link,
            "--room",
            "party",
            "--adapter",
            "tun",
            "--name",
            "lpcl9",
            "--state-dir",
            &state_arg,
        ],
        "not the room secret",
    );
    let status = wait_exit(&mut client, Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{:?}", lines.lock().unwrap());
    wait_for_line(&lines, Duration::from_secs(1), |l| {
        l.contains("rejected: room secret rejected")
    });
    assert!(
        x.ip(&["link", "show", "lpcl9"]).is_err(),
        "the TUN outlived the client"
    );
    first.stop_and_check_removed();
}

#[test]
fn client_binary_says_when_the_relay_is_unreachable_and_keeps_retrying() {
    let test = "client_binary_says_when_the_relay_is_unreachable_and_keeps_retrying";
    if !netns::require_root(test) {
        return;
    }
    let x = Netns::create("ur").unwrap();
    // Nothing listens on X's loopback port 9: each attempt fails at once (ICMP port
    // unreachable) or times out, and the client backs off.
    // The settings come from a TOML file this time; flags still name the interface.
    let dir = TempDir::new("unreach");
    let config = dir.join("client.toml");
    std::fs::write(
        &config,
        format!(
            "relay = \"127.0.0.1:9\"\nroom = \"party\"\npin = \"{}\"\nadapter = \"tun\"\n\
             state_dir = \"{}\"\n",
            "00".repeat(32),
            dir.display()
        ),
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let (mut client, lines) =
        spawn_client(&x, &["--config", &config_arg, "--name", "lpcl0"], SECRET);
    wait_for_line(&lines, Duration::from_secs(1), |l| {
        l.ends_with("connecting to 127.0.0.1:9")
    });
    wait_for_line(&lines, Duration::from_secs(15), |l| {
        l.contains("retrying in")
    });
    assert!(client.0.try_wait().unwrap().is_none(), "the client gave up");
    // The file's adapter kind and state directory were used.
    let link = x.ip(&["link", "show", "lpcl0"]).unwrap();
    assert!(link.contains("POINTOPOINT"), "not a TUN: {link}");
    assert!(dir.join("mac").exists());
    let ok = Command::new("kill")
        .args(["-INT", &client.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert!(wait_exit(&mut client, Duration::from_secs(2)).success());
}
