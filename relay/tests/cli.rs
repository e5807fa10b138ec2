//! The `lanparty-relay` binary: startup banner and join link, certificate errors, the config
//! file, the `status` subcommand and SIGTERM.

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lanparty_control::link::JoinLink;
use lanparty_control::msg::{Message, RejectCode, Role};
use lanparty_datapath::quic::tls::{Fingerprint, ServerIdentity};

const BIN: &str = env!("CARGO_BIN_EXE_lanparty-relay");

/// The relay binary as a child process, killed (by its PID) if a test fails.
struct RelayProcess {
    child: Child,
    link: JoinLink,
    metrics: Option<SocketAddr>,
}

impl RelayProcess {
    fn spawn(args: &[&str]) -> Self {
        Self::try_spawn(args).expect("the banner prints a join link")
    }

    /// Starts the relay; `None` when it exits before printing its join link (for example
    /// because its port is still held by a process that was just killed).
    fn try_spawn(args: &[&str]) -> Option<Self> {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run lanparty-relay");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut link = None;
        let mut metrics = None;
        while let Some(Ok(line)) = lines.next() {
            if let Some(text) = line.strip_prefix("join link: ") {
                link = Some(text.parse::<JoinLink>().expect("a valid join link"));
            }
            if let Some(rest) = line.strip_prefix("metrics: http://") {
                metrics = rest.split('/').next().map(|a| a.parse().unwrap());
            }
            if link.is_some() && (metrics.is_some() || !args.contains(&"--metrics")) {
                break;
            }
        }
        match link {
            Some(link) => Some(Self {
                child,
                link,
                metrics,
            }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        format!("{}:{}", self.link.host, self.link.port)
            .parse()
            .unwrap()
    }

    fn pin(&self) -> Fingerprint {
        Fingerprint(self.link.pin.expect("a pinned link"))
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir() -> Dir {
    Dir(state_dir())
}

#[test]
fn a_missing_certificate_file_is_one_line_naming_the_file() {
    let out = Command::new(BIN)
        .args([
            "--cert",
            "/nonexistent/lp-cert.pem",
            "--key",
            "/nonexistent/lp-key.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/lp-cert.pem"), "{stderr}");
}

#[test]
fn a_key_that_does_not_fit_the_certificate_is_one_line_naming_both_files() {
    let (a, b) = (dir(), dir());
    ServerIdentity::load_or_generate(&a.0, &["a.example".into()]).unwrap();
    ServerIdentity::load_or_generate(&b.0, &["b.example".into()]).unwrap();
    let cert = a.0.join("cert.pem");
    let key = b.0.join("key.pem");
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(cert.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains(key.to_str().unwrap()), "{stderr}");
}

#[test]
fn the_generated_certificate_survives_a_restart() {
    let d = dir();
    let state = d.0.to_str().unwrap();
    let first = RelayProcess::spawn(&["--listen", "127.0.0.1:0", "--state-dir", state]);
    let pin = first.pin();
    drop(first);
    let second = RelayProcess::spawn(&["--listen", "127.0.0.1:0", "--state-dir", state]);
    assert_eq!(second.pin(), pin);
    assert_eq!(second.link.host, "127.0.0.1");
}

#[test]
fn the_config_file_sets_limits_and_flags_win() {
    let d = dir();
    std::fs::create_dir_all(&d.0).unwrap();
    let file = d.0.join("relay.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1\"\nmax_peers_per_room = 1\npublic_host = \"relay.example\"\n",
    )
    .unwrap();
    let state = d.0.join("state");
    let relay = RelayProcess::spawn(&[
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(relay.link.host, "relay.example");
    assert_ne!(relay.link.port, 1, "--listen overrides the file");
    let addr: SocketAddr = format!("127.0.0.1:{}", relay.link.port).parse().unwrap();
    let mut ann = TestPeer::connect(addr, relay.pin());
    ann.send(&Message::Hello(hello(
        Role::Client,
        "lan-party",
        mac(1),
        "Ann",
    )));
    ann.expect_welcome();
    let mut bob = TestPeer::connect(addr, relay.pin());
    bob.send(&Message::Hello(hello(
        Role::Client,
        "lan-party",
        mac(2),
        "Bob",
    )));
    assert_eq!(bob.expect_reject().0, RejectCode::RoomFull);
}

#[test]
fn status_prints_rooms_and_peers_and_sigterm_disconnects_everyone() {
    let d = dir();
    let mut relay = RelayProcess::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        d.0.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = relay.metrics.expect("metrics address printed");
    let mut ann = TestPeer::connect(relay.addr(), relay.pin());
    ann.send(&Message::Hello(hello(
        Role::Client,
        "lan-party",
        mac(1),
        "Ann",
    )));
    ann.expect_welcome();

    let out = Command::new(BIN)
        .args(["status", "--metrics", &metrics.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("room lan-party"), "{table}");
    assert!(
        table.contains("Ann") && table.contains("02:5e:10:00:00:01"),
        "{table}"
    );

    let prometheus = lanparty_relay::cli::http_get(metrics, "/metrics").unwrap();
    assert!(
        prometheus.contains("lanparty_relay_room_peers{room=\"lan-party\"} 1"),
        "{prometheus}"
    );

    let started = Instant::now();
    relay.signal("-TERM");
    match ann.next_notice(WAIT) {
        Some(Message::Disconnect(d)) => assert_eq!(d.reason, "relay shutting down"),
        other => panic!("expected a disconnect, got {other:?}"),
    }
    assert!(ann.wait_closed(WAIT).is_some());
    let status = loop {
        if let Some(status) = relay.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "still running after 2 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn peers_of_a_killed_relay_hear_of_its_restart_without_waiting_for_their_idle_timeout() {
    let d = dir();
    let state = d.0.to_str().unwrap().to_owned();
    let first = RelayProcess::spawn(&["--listen", "127.0.0.1:0", "--state-dir", &state]);
    let addr = first.addr();
    let mut peer = TestPeer::connect(addr, first.pin());
    peer.send(&Message::Hello(hello(
        Role::Client,
        "restart",
        mac(1),
        "Ann",
    )));
    peer.expect_welcome();

    // No goodbye: the process dies and its connection state with it.
    first.signal("-KILL");
    drop(first);
    let listen = addr.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        if let Some(r) = RelayProcess::try_spawn(&["--listen", &listen, "--state-dir", &state]) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the relay could not take its port back"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let restarted = Instant::now();
    // The peer's next packet (a keep-alive within 5 s) meets the new process, which knows the
    // old reset key and answers with a stateless reset; the idle timeout would take 30 s.
    let reason = peer
        .wait_closed(Duration::from_secs(15))
        .expect("the peer notices the restart before its idle timeout");
    assert!(restarted.elapsed() < Duration::from_secs(15));
    assert!(reason.to_lowercase().contains("reset"), "{reason}");
    drop(second);
}
