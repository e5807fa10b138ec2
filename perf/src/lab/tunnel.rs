//! The tunnelled variant: the real relay, gateway and clients started in the lab's namespaces.
//!
//! [`start_tunnel`] starts, in this order and each only once the one before is ready:
//!
//! 1. `lanparty-relay` in the relay namespace, listening on [`RELAY_ADDR`]`:4433`, its
//!    certificate kept in `<lab dir>/relay-state` and its `/status` on `127.0.0.1:9464` inside that
//!    namespace. It is ready once it printed its join link on stdout (the pin is taken from
//!    there) and `/status` answers.
//! 2. `lanparty-gateway` in the gw namespace, bridging `lan0` into room [`ROOM`]. It is ready
//!    once the relay's `/status` lists a gateway in the room (a client cannot open a room).
//! 3. The two `lanparty-client`s, c1 with a TAP and c2 with a TUN adapter, both named
//!    [`CLIENT_ADAPTER`]. Each is ready once the relay lists it (by its display name, the role)
//!    and its adapter carries the IPv4 address the party LAN's DHCP server gave it through the
//!    tunnel.
//!
//! The room secret reaches the programs through `LANPARTY_SECRET`, never the command line.
//! Every wait is bounded; when a program exits or does not get ready in time the error names
//! the program and quotes the end of its stderr (the full logs stay in the lab directory).
//!
//! [`Tunnel::restart_relay`] kills the relay by PID (no goodbye) and starts it again on the same
//! state directory, so the pin stays valid and the peers can come back on their own; the
//! gateway and the clients keep running throughout. A client notices a silently dead relay only
//! through its QUIC idle timeout (30 s), so that recovery takes about half a minute.
//!
//! The relay is polled through its own `/status` endpoint from a thread inside the relay
//! namespace ([`Netns::run_in`]), with [`lanparty_relay::cli::fetch_status`], so the lab reads
//! exactly what an operator would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lanparty_control::link::{JoinLink, fingerprint_hex};
use lanparty_datapath::sys::netns::Netns;
use lanparty_relay::status::StatusReport;

use super::measure::addresses;
use super::process::LabProcess;
use super::{CLIENT_ADAPTER, LabError, Node, RELAY_ADDR};

/// The room the lab's gateway opens and the clients join.
pub const ROOM: &str = "party";
/// The relay's UDP port.
pub const RELAY_PORT: u16 = 4433;
/// Where the relay serves `/status` and `/metrics`, inside the relay namespace.
pub const RELAY_METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);
/// What to run when the tunnel programs are missing.
pub const BUILD_HINT: &str = "cargo build --release --workspace";

/// The adapter kind of each client: c1 a TAP (true Ethernet), c2 a TUN (Ethernet emulated by
/// the client).
pub const CLIENT_ADAPTERS: [(&str, &str); 2] = [("c1", "tap"), ("c2", "tun")];

/// Where the tunnel programs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelBinaries {
    /// `lanparty-relay`.
    pub relay: PathBuf,
    /// `lanparty-gateway`.
    pub gateway: PathBuf,
    /// `lanparty-client`.
    pub client: PathBuf,
}

impl TunnelBinaries {
    /// The three programs in directory `dir` (for example `target/debug`).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            relay: dir.join("lanparty-relay"),
            gateway: dir.join("lanparty-gateway"),
            client: dir.join("lanparty-client"),
        }
    }

    /// The three programs next to the running executable (cargo puts all of a workspace's
    /// binaries in one directory).
    pub fn next_to_current_exe() -> Self {
        let dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        Self::in_dir(&dir)
    }

    /// The programs that are not there (not a file).
    pub fn missing(&self) -> Vec<&Path> {
        [&self.relay, &self.gateway, &self.client]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(PathBuf::as_path)
            .collect()
    }

    /// Checks that all three programs are there.
    ///
    /// # Errors
    ///
    /// [`LabError::ProgramsMissing`] naming the missing ones and how to build them.
    pub fn check(&self) -> Result<(), LabError> {
        let missing = self.missing();
        if missing.is_empty() {
            return Ok(());
        }
        Err(LabError::ProgramsMissing {
            dir: self
                .relay
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            programs: missing
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// The namespaces and addresses the tunnel programs run with.
#[derive(Debug)]
pub struct TunnelNamespaces<'a> {
    /// The relay's namespace; it listens on `relay.wan_addr`.
    pub relay: &'a Node,
    /// The gateway's namespace; it bridges `gw.lan_if` (plugged into the party bridge, no IP)
    /// into the room and reaches the relay over `gw.wan_if`.
    pub gateway: &'a Node,
    /// The client namespaces (c1, c2); each client creates its TAP/TUN there, named
    /// [`CLIENT_ADAPTER`], and reaches the relay over `wan_if`.
    pub clients: [&'a Node; 2],
    /// Where program logs and state directories go.
    pub log_dir: &'a Path,
}

/// How the tunnel is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSettings {
    /// The room secret (given to the programs as `LANPARTY_SECRET`).
    pub secret: String,
    /// How long the relay may take to print its join link and answer `/status`.
    pub relay_timeout: Duration,
    /// How long the gateway may take to join.
    pub gateway_timeout: Duration,
    /// How long a client may take to join and get its address by DHCP through the tunnel.
    pub client_timeout: Duration,
    /// The gateway's `--idle-timeout` in seconds (`None`: the program's default of 30 s).
    pub gateway_idle_timeout: Option<u64>,
}

impl Default for TunnelSettings {
    /// A fixed lab secret, 10 s for the relay, 15 s for the gateway, 30 s for each client.
    fn default() -> Self {
        Self {
            secret: "lab-party-secret".into(),
            relay_timeout: Duration::from_secs(10),
            gateway_timeout: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            gateway_idle_timeout: None,
        }
    }
}

/// The running relay, gateway and clients; dropping it kills them by PID.
#[derive(Debug)]
pub struct Tunnel {
    // Clients first, relay last: the programs that depend on the relay go before it.
    clients: Vec<(&'static str, LabProcess)>,
    gateway: LabProcess,
    relay: LabProcess,
    relay_starts: u32,
    join_link: String,
    pin: [u8; 32],
    state_dir: PathBuf,
    bins: TunnelBinaries,
    settings: TunnelSettings,
}

impl Tunnel {
    /// The join link the relay printed.
    pub fn join_link(&self) -> &str {
        &self.join_link
    }

    /// The relay's certificate fingerprint (64 hex digits).
    pub fn pin_hex(&self) -> String {
        fingerprint_hex(&self.pin)
            .replace(':', "")
            .to_ascii_lowercase()
    }

    /// The relay's state directory (its certificate).
    pub fn relay_state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The relay process.
    pub fn relay(&mut self) -> &mut LabProcess {
        &mut self.relay
    }

    /// The gateway process.
    pub fn gateway(&mut self) -> &mut LabProcess {
        &mut self.gateway
    }

    /// The client process of `role` (`c1`, `c2`).
    pub fn client(&mut self, role: &str) -> Option<&mut LabProcess> {
        self.clients
            .iter_mut()
            .find(|(r, _)| *r == role)
            .map(|(_, p)| p)
    }

    /// The clients, the gateway and the relay, all mutable at once.
    pub fn processes_mut(
        &mut self,
    ) -> (
        impl Iterator<Item = &mut LabProcess>,
        &mut LabProcess,
        &mut LabProcess,
    ) {
        (
            self.clients.iter_mut().map(|(_, p)| p),
            &mut self.gateway,
            &mut self.relay,
        )
    }

    /// PIDs of relay, gateway and clients.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.relay.pid(), self.gateway.pid()];
        pids.extend(self.clients.iter().map(|(_, p)| p.pid()));
        pids
    }

    /// The settings the tunnel was started with.
    pub fn settings(&self) -> &TunnelSettings {
        &self.settings
    }

    /// Kills the relay by its PID (SIGKILL: no goodbye to the peers) and starts it again with
    /// the same state directory, so its certificate, and the pin the peers hold, stay the same.
    /// Returns once the new relay answers `/status`; the peers come back on their own (see
    /// [`wait_for_room`]). While the old relay's port is still taken the start is retried for
    /// up to 5 s (logs `relay-2`, `relay-3`, ... in the lab directory).
    ///
    /// # Errors
    ///
    /// Those of starting the relay, and [`LabError::Failed`] when the restarted relay shows
    /// another certificate.
    pub fn restart_relay(&mut self, relay: &Node, log_dir: &Path) -> Result<(), LabError> {
        self.relay.kill();
        // The kernel may release a dead process's sockets a moment after it is reaped (io_uring
        // tears its rings down asynchronously), so the port can still be taken: retry briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (process, link, pin) = loop {
            self.relay_starts += 1;
            let name = format!("relay-{}", self.relay_starts);
            match start_relay(
                &self.bins,
                relay,
                &name,
                &self.state_dir,
                log_dir,
                &self.settings,
            ) {
                Err(LabError::Program { stderr_tail, .. })
                    if stderr_tail.contains("Address already in use")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => break other?,
            }
        };
        self.relay = process;
        if pin != self.pin {
            return Err(LabError::Failed {
                what: "restarting the relay".into(),
                detail: format!(
                    "the certificate changed: pin {} instead of {}",
                    fingerprint_hex(&pin),
                    fingerprint_hex(&self.pin)
                ),
            });
        }
        self.join_link = link;
        Ok(())
    }
}

/// The relay's `/status`, fetched from inside `relay_ns`.
///
/// # Errors
///
/// [`LabError::Netns`] when the namespace cannot be entered, [`LabError::Failed`] when the relay
/// does not answer.
pub fn relay_status(relay_ns: &Netns) -> Result<StatusReport, LabError> {
    relay_ns
        .run_in(|| lanparty_relay::cli::fetch_status(RELAY_METRICS))?
        .map_err(|e| LabError::Failed {
            what: format!("reading the relay's status at http://{RELAY_METRICS}/status"),
            detail: format!("{e:#}"),
        })
}

/// Whether the relay's room lists a gateway and every client of `clients` (by display name).
pub fn room_complete(status: &StatusReport, clients: &[&str]) -> bool {
    status.room(ROOM).is_some_and(|room| {
        room.peers.iter().any(|p| p.role == "gateway")
            && clients.iter().all(|c| {
                room.peers
                    .iter()
                    .any(|p| p.role == "client" && p.name == *c)
            })
    })
}

/// Waits until the relay's room lists the gateway and `clients` again (after a relay restart),
/// while `processes` keep running.
///
/// # Errors
///
/// [`LabError::Program`] when one of `processes` exits, [`LabError::Timeout`] (with the room as
/// last seen) when the room is not complete in time.
pub fn wait_for_room(
    relay_ns: &Netns,
    clients: &[&str],
    processes: &mut [&mut LabProcess],
    timeout: Duration,
) -> Result<StatusReport, LabError> {
    let mut last = None;
    wait_until(
        &if clients.is_empty() {
            format!("the gateway in room {ROOM}")
        } else {
            format!("room {ROOM} with the gateway and {}", clients.join(", "))
        },
        timeout,
        processes,
        || {
            let status = relay_status(relay_ns).ok();
            let done = status.as_ref().is_some_and(|s| room_complete(s, clients));
            if done {
                return status;
            }
            last = status;
            None
        },
    )
    .map_err(|e| match e {
        LabError::Timeout { what, timeout } => LabError::Timeout {
            what: format!(
                "{what} (the relay's room last looked like: {})",
                describe_room(last.as_ref())
            ),
            timeout,
        },
        other => other,
    })
}

fn describe_room(status: Option<&StatusReport>) -> String {
    let Some(status) = status else {
        return "no answer from /status".into();
    };
    match status.room(ROOM) {
        None => format!("no room {ROOM}"),
        Some(room) if room.peers.is_empty() => "empty".into(),
        Some(room) => room
            .peers
            .iter()
            .map(|p| format!("{} {:?}", p.role, p.name))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Polls `ready` every 50 ms until it returns something, failing as soon as one of `processes`
/// has exited (naming it and quoting its stderr) or when `timeout` passes.
fn wait_until<T>(
    what: &str,
    timeout: Duration,
    processes: &mut [&mut LabProcess],
    mut ready: impl FnMut() -> Option<T>,
) -> Result<T, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = ready() {
            return Ok(v);
        }
        for p in processes.iter_mut() {
            if !p.is_running() {
                return Err(program_error(
                    p,
                    &format!("exited while we waited for {what}"),
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout {
                what: what.to_owned(),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn program_error(p: &LabProcess, problem: &str) -> LabError {
    LabError::Program {
        program: p.name().to_owned(),
        problem: problem.to_owned(),
        stderr_tail: last_lines(&p.stderr_tail(), 12),
        log: p.stderr_path().to_path_buf(),
    }
}

/// A timeout while `p` runs becomes an error naming `p` with its stderr.
fn blame(p: &LabProcess, e: LabError) -> LabError {
    match e {
        LabError::Timeout { what, timeout } => program_error(
            p,
            &format!("did not get ready: timed out after {timeout:?} waiting for {what}"),
        ),
        other => other,
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Starts the relay as `name` and waits for its join link and `/status`.
fn start_relay(
    bins: &TunnelBinaries,
    relay: &Node,
    name: &str,
    state_dir: &Path,
    log_dir: &Path,
    settings: &TunnelSettings,
) -> Result<(LabProcess, String, [u8; 32]), LabError> {
    let addr = relay.wan_addr.unwrap_or(RELAY_ADDR);
    let argv = [
        bins.relay.display().to_string(),
        "--listen".into(),
        format!("{addr}:{RELAY_PORT}"),
        "--public-host".into(),
        addr.to_string(),
        "--state-dir".into(),
        state_dir.display().to_string(),
        "--metrics".into(),
        RELAY_METRICS.to_string(),
    ];
    let mut process = LabProcess::spawn(&relay.ns, name, &argv, log_dir)?;
    let link = wait_until(
        "its join link on stdout",
        settings.relay_timeout,
        &mut [&mut process],
        || stdout_line(log_dir, name, "join link: "),
    );
    let link = link.map_err(|e| blame(&process, e))?;
    let parsed: JoinLink = link.parse().map_err(|e| {
        program_error(
            &process,
            &format!("printed a join link we cannot read ({link}): {e}"),
        )
    })?;
    let Some(pin) = parsed.pin else {
        return Err(program_error(
            &process,
            &format!("printed a join link without a pin: {link}"),
        ));
    };
    wait_until(
        &format!("http://{RELAY_METRICS}/status to answer"),
        settings.relay_timeout,
        &mut [&mut process],
        || relay_status(&relay.ns).ok(),
    )
    .map_err(|e| blame(&process, e))?;
    Ok((process, link, pin))
}

/// The rest of the first line of `<log_dir>/<name>.out` that starts with `prefix`.
fn stdout_line(log_dir: &Path, name: &str, prefix: &str) -> Option<String> {
    let out = std::fs::read_to_string(log_dir.join(format!("{name}.out"))).ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|l| l.trim().to_owned())
}

/// The command line shared by the gateway and the clients: relay address, room and pin.
fn peer_args(program: &Path, relay_addr: Ipv4Addr, pin: &[u8; 32]) -> Vec<String> {
    vec![
        program.display().to_string(),
        "--relay".into(),
        format!("{relay_addr}:{RELAY_PORT}"),
        "--room".into(),
        ROOM.into(),
        "--pin".into(),
        fingerprint_hex(pin).replace(':', "").to_ascii_lowercase(),
    ]
}

/// Starts the relay, the gateway and both clients of the tunnelled variant (see the module
/// docs) and returns them once every client has its address.
///
/// # Errors
///
/// [`LabError::ProgramsMissing`] when a program is not built; [`LabError::Program`] when a
/// program exits or does not get ready in time (with the end of its stderr); the errors of
/// starting processes.
pub fn start_tunnel(
    bins: &TunnelBinaries,
    nets: &TunnelNamespaces<'_>,
    settings: &TunnelSettings,
    progress: &mut dyn FnMut(&str),
) -> Result<Tunnel, LabError> {
    bins.check()?;
    let relay_addr = nets.relay.wan_addr.unwrap_or(RELAY_ADDR);
    let state_dir = nets.log_dir.join("relay-state");
    progress(&format!(
        "relay: lanparty-relay on {relay_addr}:{RELAY_PORT}, status on {RELAY_METRICS} in its namespace"
    ));
    let (relay, join_link, pin) = start_relay(
        bins,
        nets.relay,
        "relay",
        &state_dir,
        nets.log_dir,
        settings,
    )?;
    progress(&format!("relay: {join_link}"));
    let env = [("LANPARTY_SECRET", settings.secret.as_str())];

    progress(&format!(
        "gateway: lanparty-gateway bridging lan0 into room {ROOM}"
    ));
    let mut argv = peer_args(&bins.gateway, relay_addr, &pin);
    argv.extend([
        "--interface".into(),
        nets.gateway.lan_if.clone().unwrap_or_else(|| "lan0".into()),
        "--name".into(),
        "lab-gateway".into(),
    ]);
    if let Some(secs) = settings.gateway_idle_timeout {
        argv.extend(["--idle-timeout".into(), secs.to_string()]);
    }
    let mut gateway =
        LabProcess::spawn_with_env(&nets.gateway.ns, "gateway", &argv, &env, nets.log_dir)?;
    let mut relay = relay;
    wait_for_room(
        &nets.relay.ns,
        &[],
        &mut [&mut gateway, &mut relay],
        settings.gateway_timeout,
    )
    .map_err(|e| blame(&gateway, e))?;

    let mut clients = Vec::new();
    for ((role, adapter), node) in CLIENT_ADAPTERS.into_iter().zip(nets.clients) {
        progress(&format!(
            "{role}: lanparty-client with a {} adapter {CLIENT_ADAPTER}",
            adapter.to_ascii_uppercase()
        ));
        let mut argv = peer_args(&bins.client, relay_addr, &pin);
        argv.extend([
            "--adapter".into(),
            adapter.into(),
            "--name".into(),
            CLIENT_ADAPTER.into(),
            "--display-name".into(),
            role.into(),
            "--state-dir".into(),
            nets.log_dir
                .join(format!("{role}-state"))
                .display()
                .to_string(),
        ]);
        let p = LabProcess::spawn_with_env(&node.ns, role, &argv, &env, nets.log_dir)?;
        clients.push((role, p));
    }
    for ((role, p), node) in clients.iter_mut().zip(nets.clients) {
        wait_for_room(
            &nets.relay.ns,
            &[role],
            &mut [&mut *p, &mut gateway, &mut relay],
            settings.client_timeout,
        )
        .map_err(|e| blame(p, e))?;
        let addr = wait_for_client_addr(&node.ns, p, settings.client_timeout)?;
        progress(&format!(
            "{role}: joined; DHCP through the tunnel gave {addr}"
        ));
    }
    Ok(Tunnel {
        clients,
        gateway,
        relay,
        relay_starts: 1,
        join_link,
        pin,
        state_dir,
        bins: bins.clone(),
        settings: settings.clone(),
    })
}

/// Waits until the client's adapter carries an IPv4 address, while the client runs.
///
/// # Errors
///
/// [`LabError::Program`] when the client exits or no address shows up in time.
pub fn wait_for_client_addr(
    ns: &Netns,
    client: &mut LabProcess,
    timeout: Duration,
) -> Result<Ipv4Addr, LabError> {
    wait_until(
        &format!("an IPv4 address on {CLIENT_ADAPTER} (DHCP through the tunnel)"),
        timeout,
        &mut [&mut *client],
        || {
            addresses(ns, CLIENT_ADAPTER)
                .ok()?
                .into_iter()
                .find_map(|a| match a {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })
        },
    )
    .map_err(|e| blame(client, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_programs_are_named_with_the_build_command() {
        let dir = std::env::temp_dir().join(format!("lplab-bins-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("lanparty-relay"), b"").unwrap();
        let bins = TunnelBinaries::in_dir(&dir);
        assert_eq!(bins.missing().len(), 2);
        let err = bins.check().unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("lanparty-gateway, lanparty-client"), "{err}");
        assert!(!err.contains("lanparty-relay,"), "{err}");
        assert!(err.contains(BUILD_HINT), "{err}");
    }

    #[test]
    fn a_room_is_complete_with_its_gateway_and_the_named_clients() {
        let status: StatusReport = serde_json::from_value(serde_json::json!({
            "listen": "198.19.0.1:4433", "fingerprint": "", "backend": "quinn-udp",
            "connections": 2, "counters": {
                "udp_datagrams_received": 0, "udp_datagrams_sent": 0, "unroutable_datagrams": 0,
                "rejected_datagrams": 0, "connections_accepted": 0, "connections_refused": 0,
                "handshakes_timed_out": 0, "unadmitted_datagrams": 0, "datagrams_dropped_tx": 0,
                "datagrams_dropped_rx": 0, "admitted": 2, "rejects": {}
            },
            "rooms": [{ "code": "party", "budget": 1452, "max_frame": 1518, "mac_table": 1,
                "learned_macs": 0, "floods": 0, "drops": {}, "peers": [
                    { "peer_id": 1, "role": "gateway", "mac": "", "name": "lab-gateway",
                      "source": "", "frames_in": 0, "datagrams_in": 0, "bytes_in": 0,
                      "datagrams_out": 0, "bytes_out": 0, "drops": {}, "rtt_ms": 0.0,
                      "sent_packets": 0, "lost_packets": 0, "mtu": 1452 },
                    { "peer_id": 2, "role": "client", "mac": "", "name": "c1",
                      "source": "", "frames_in": 0, "datagrams_in": 0, "bytes_in": 0,
                      "datagrams_out": 0, "bytes_out": 0, "drops": {}, "rtt_ms": 0.0,
                      "sent_packets": 0, "lost_packets": 0, "mtu": 1452 }
            ]}]
        }))
        .unwrap();
        assert!(room_complete(&status, &[]));
        assert!(room_complete(&status, &["c1"]));
        assert!(!room_complete(&status, &["c1", "c2"]));
        assert!(describe_room(Some(&status)).contains("client \"c1\""));
        assert!(!room_complete(&StatusReport::default(), &[]));
    }
}
