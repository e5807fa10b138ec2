//! The baselines of `bench e2e` that tunnel: OpenVPN in TAP mode, tinc 1.0 in switch mode and a
//! null tunnel made of `socat`, set up in a tunnel-variant lab exactly where our relay, gateway
//! and client run.
//!
//! All use the same shape as softlan: a hub in the `relay` namespace, a node in the `gw`
//! namespace whose TAP device is bridged with `lan0` (the gateway's port on the party bridge,
//! through a bridge `lpbr0` with IPv6 off, so the gateway does not speak on the LAN itself),
//! and a node in `c1` whose TAP device is called [`CLIENT_ADAPTER`] and takes its address from
//! the party's dnsmasq.
//!
//! - **OpenVPN** (2.x, TLS mode, UDP): `--server-bridge` without arguments (clients get their
//!   address by DHCP across the bridge) plus `--client-to-client`, so the server switches frames
//!   between the gateway's and the player's connections. A throw-away PKI (EC P-256 CA, one
//!   server and one client certificate, `--duplicate-cn`) is made with `openssl` in the lab's
//!   directory. Data channel: OpenVPN's defaults (AES-256-GCM), `--disable-dco` (DCO does not do
//!   TAP anyway).
//! - **tinc 1.0**: `Mode = switch`, `DeviceType = tap`, RSA keys from `tincd -K`, defaults
//!   otherwise (tinc 1.0's defaults: Blowfish-CBC and SHA-1). The gateway's and the player's
//!   host files say `IndirectData = yes` so their frames go through the hub like ours do; without
//!   it tinc would send them peer to peer over the flat lab Internet.
//! - **Null tunnel**: three `socat` processes that copy frames between TAP devices and UDP
//!   datagrams unchanged: no encryption, no protocol, one `read` and one `write` per frame and
//!   hop. The hub copies between the player's and the gateway's datagrams. It shows what three
//!   user-space hops cost on this machine before a tunnel does any work of its own (the
//!   kernel's paths, the wake-ups, cold caches after an idle spell): a reference point for the
//!   real tunnels, not a strict lower bound (a tunnel with fewer system calls per frame can
//!   come in under it).
//!
//! Every program is a [`LabProcess`] (killed by PID on drop); startup waits are bounded.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use lanparty_datapath::sys::netns::{Bridge, Netns};
use lanparty_perf::lab::{CLIENT_ADAPTER, Lab, LabProcess, RELAY_ADDR};

/// What to tell a user without the baselines installed.
pub(crate) const VPN_INSTALL_HINT: &str = "apt-get install openvpn tinc";
/// What to tell a user without the null tunnel's program.
pub(crate) const SOCAT_INSTALL_HINT: &str = "apt-get install socat";

/// The TAP device of the hub and of the gateway node.
const TAP: &str = "lptap0";
/// The bridge on the gateway that joins the TAP device and `lan0`.
const GW_BRIDGE: &str = "lpbr0";
/// How long a baseline may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether `program` can be started (`program arg`).
fn installed(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether `openvpn` and `openssl` (for the PKI) are installed.
pub(crate) fn openvpn_installed() -> bool {
    installed("openvpn", "--version") && installed("openssl", "version")
}

/// Whether tinc's `tincd` is installed.
pub(crate) fn tinc_installed() -> bool {
    installed("tincd", "--version")
}

/// Whether `socat` (the null tunnel) is installed.
pub(crate) fn socat_installed() -> bool {
    installed("socat", "-V")
}

/// A running baseline: its processes (hub, gateway node, player node) and the gateway bridge.
#[derive(Debug)]
pub(crate) struct Baseline {
    // Processes die before the bridge goes.
    pub(crate) procs: Vec<LabProcess>,
    _bridge: Bridge,
}

impl Baseline {
    /// PIDs of the baseline's processes.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(LabProcess::pid).collect()
    }
}

fn run(argv: &[&str], dir: &Path) -> anyhow::Result<()> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", argv[0]))?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Waits until `ready` holds, failing early when one of `procs` exited.
fn wait_until(
    what: &str,
    procs: &mut [LabProcess],
    mut ready: impl FnMut(&[LabProcess]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if ready(procs) {
            return Ok(());
        }
        for p in procs.iter_mut() {
            if !p.is_running() {
                bail!("{} exited: {}", p.name(), p.stderr_tail());
            }
        }
        if Instant::now() >= deadline {
            bail!("{what} not ready within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_contains(p: &LabProcess, needle: &str) -> bool {
    [p.stdout_path(), p.stderr_path()]
        .iter()
        .any(|f| std::fs::read_to_string(f).is_ok_and(|s| s.contains(needle)))
}

/// Bridges the gateway's TAP device with `lan0`, brings the player's adapter up, points the
/// player's `lan_if` at it and takes a DHCP lease across the tunnel.
fn finish(lab: &mut Lab, procs: Vec<LabProcess>) -> anyhow::Result<Baseline> {
    let gw = &lab.node("gw")?.ns;
    wait_for_link(gw, TAP)?;
    let bridge = Bridge::create(gw, GW_BRIDGE)?;
    for ifname in [GW_BRIDGE, TAP] {
        gw.set_sysctl(&format!("net.ipv6.conf.{ifname}.disable_ipv6"), "1")?;
    }
    bridge.add_port(TAP)?;
    bridge.add_port("lan0")?;
    let c1 = &lab.node("c1")?.ns;
    wait_for_link(c1, CLIENT_ADAPTER)?;
    c1.set_link_up(CLIENT_ADAPTER)?;
    lab.node_mut("c1")?.lan_if = Some(CLIENT_ADAPTER.into());
    lab.dhcp("c1", Duration::from_secs(15))
        .context("DHCP across the baseline tunnel")?;
    Ok(Baseline {
        procs,
        _bridge: bridge,
    })
}

fn wait_for_link(ns: &Netns, ifname: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    while ns.ip(&["link", "show", "dev", ifname]).is_err() {
        ensure!(
            Instant::now() < deadline,
            "{ifname} did not appear in {}",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn spawn(lab: &Lab, role: &str, name: &str, argv: &[String]) -> anyhow::Result<LabProcess> {
    Ok(LabProcess::spawn(
        &lab.node(role)?.ns,
        name,
        argv,
        lab.dir(),
    )?)
}

/// Starts OpenVPN (hub in `relay`, clients in `gw` and `c1`) and bridges it into the party.
pub(crate) fn start_openvpn(lab: &mut Lab) -> anyhow::Result<Baseline> {
    let dir = lab.dir().join("openvpn");
    std::fs::create_dir_all(&dir)?;
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let req = |extra: &[&str]| -> anyhow::Result<()> {
        let mut argv = vec!["openssl", "req", "-nodes", "-days", "2"];
        argv.extend_from_slice(&ec);
        argv.extend_from_slice(extra);
        run(&argv, &dir)
    };
    req(&[
        "-x509",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=lp-bench-ca",
    ])?;
    for who in ["server", "client"] {
        req(&[
            "-keyout",
            &format!("{who}.key"),
            "-out",
            &format!("{who}.csr"),
            "-subj",
            &format!("/CN=lp-bench-{who}"),
        ])?;
        run(
            &[
                "openssl",
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &format!("{who}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{who}.crt"),
            ],
            &dir,
        )?;
    }
    let file = |name: &str| dir.join(name).display().to_string();
    let common = |dev: &str, who: &str| -> Vec<String> {
        [
            "openvpn",
            "--dev",
            dev,
            "--dev-type",
            "tap",
            "--proto",
            "udp",
            "--disable-dco",
            "--verb",
            "3",
            "--ca",
            &file("ca.crt"),
            "--cert",
            &file(&format!("{who}.crt")),
            "--key",
            &file(&format!("{who}.key")),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let mut server = common(TAP, "server");
    server.extend(
        [
            "--server-bridge",
            "--client-to-client",
            "--duplicate-cn",
            "--dh",
            "none",
            "--local",
            &RELAY_ADDR.to_string(),
            "--port",
            "1194",
            "--keepalive",
            "10",
            "60",
        ]
        .map(str::to_owned),
    );
    let client = |dev: &str| {
        let mut argv = common(dev, "client");
        argv.extend(
            [
                "--client",
                "--nobind",
                "--remote",
                &RELAY_ADDR.to_string(),
                "1194",
            ]
            .map(str::to_owned),
        );
        argv
    };
    let mut procs = vec![spawn(lab, "relay", "openvpn-hub", &server)?];
    wait_until("the OpenVPN hub", &mut procs, |p| {
        log_contains(&p[0], "Initialization Sequence Completed")
    })?;
    lab.node("relay")?.ns.set_link_up(TAP)?;
    procs.push(spawn(lab, "gw", "openvpn-gw", &client(TAP))?);
    procs.push(spawn(lab, "c1", "openvpn-c1", &client(CLIENT_ADAPTER))?);
    wait_until("the OpenVPN clients", &mut procs, |p| {
        p[1..]
            .iter()
            .all(|p| log_contains(p, "Initialization Sequence Completed"))
    })?;
    lab.node("gw")?.ns.set_link_up(TAP)?;
    finish(lab, procs)
}

/// Starts tinc 1.0 in switch mode (hub in `relay`, nodes in `gw` and `c1`) and bridges it into
/// the party.
pub(crate) fn start_tinc(lab: &mut Lab) -> anyhow::Result<Baseline> {
    let base = lab.dir().join("tinc");
    let nodes = [
        ("relay", "hub", TAP, Some(RELAY_ADDR)),
        ("gw", "gw", TAP, None),
        ("c1", "player", CLIENT_ADAPTER, None),
    ];
    let conf_dir = |name: &str| -> PathBuf { base.join(name) };
    for (_, name, dev, _) in nodes {
        let d = conf_dir(name);
        std::fs::create_dir_all(d.join("hosts"))?;
        let mut conf = format!(
            "Name = {name}\nMode = switch\nDeviceType = tap\nDevice = /dev/net/tun\n\
             Interface = {dev}\nAddressFamily = ipv4\n"
        );
        if name != "hub" {
            conf.push_str("ConnectTo = hub\n");
        }
        std::fs::write(d.join("tinc.conf"), conf)?;
        let mut host = String::from("Port = 655\n");
        match nodes.iter().find(|n| n.1 == name).and_then(|n| n.3) {
            Some(addr) => host.push_str(&format!("Address = {addr}\n")),
            None => host.push_str("IndirectData = yes\n"),
        }
        std::fs::write(d.join("hosts").join(name), host)?;
        run(&["tincd", "-c", &d.display().to_string(), "-K2048"], &base)?;
    }
    // Every node knows every host file (with its public key).
    for (_, from, _, _) in nodes {
        let host = std::fs::read(conf_dir(from).join("hosts").join(from))?;
        for (_, to, _, _) in nodes {
            std::fs::write(conf_dir(to).join("hosts").join(from), &host)?;
        }
    }
    let mut procs = Vec::new();
    for (role, name, _, _) in nodes {
        let d = conf_dir(name);
        let argv = [
            "tincd".to_owned(),
            "-c".into(),
            d.display().to_string(),
            "-D".into(),
            "-d1".into(),
            format!("--pidfile={}", d.join("tinc.pid").display()),
        ];
        procs.push(spawn(lab, role, &format!("tinc-{name}"), &argv)?);
    }
    wait_for_link(&lab.node("relay")?.ns, TAP)?;
    lab.node("relay")?.ns.set_link_up(TAP)?;
    wait_until("the tinc nodes", &mut procs, |p| {
        p[1..].iter().all(|p| log_contains(p, "activated"))
    })?;
    lab.node("gw")?.ns.set_link_up(TAP)?;
    finish(lab, procs)
}

/// UDP ports of the null tunnel: the hub's port for the player, its port for the gateway, and
/// the nodes' own ports.
const NULL_HUB_PLAYER_PORT: u16 = 5400;
const NULL_HUB_GW_PORT: u16 = 5401;
const NULL_NODE_PORT: u16 = 5402;

/// Starts the null tunnel (`socat` hub in `relay`, nodes in `gw` and `c1`) and bridges it into
/// the party.
pub(crate) fn start_null(lab: &mut Lab) -> anyhow::Result<Baseline> {
    let wan = |role: &str| -> anyhow::Result<std::net::Ipv4Addr> {
        lab.node(role)?
            .wan_addr
            .with_context(|| format!("{role} has no Internet address"))
    };
    let (gw, player) = (wan("gw")?, wan("c1")?);
    // Unconnected datagram sockets with fixed peers: a connected one would end socat on the
    // first ICMP port unreachable, which the start-up order can cause.
    let udp = |local: std::net::Ipv4Addr, port: u16, peer: std::net::Ipv4Addr, peer_port: u16| {
        format!("UDP4-DATAGRAM:{peer}:{peer_port},bind={local}:{port}")
    };
    let tap = |dev: &str| format!("TUN,tun-type=tap,iff-no-pi,tun-name={dev}");
    let socat = |a: String, b: String| -> Vec<String> {
        // -b: a buffer larger than any frame, so each read takes one frame whole.
        ["socat".into(), "-b".into(), "65536".into(), a, b].into()
    };
    let hub = socat(
        udp(RELAY_ADDR, NULL_HUB_PLAYER_PORT, player, NULL_NODE_PORT),
        udp(RELAY_ADDR, NULL_HUB_GW_PORT, gw, NULL_NODE_PORT),
    );
    let gw_node = socat(
        udp(gw, NULL_NODE_PORT, RELAY_ADDR, NULL_HUB_GW_PORT),
        tap(TAP),
    );
    let player_node = socat(
        udp(player, NULL_NODE_PORT, RELAY_ADDR, NULL_HUB_PLAYER_PORT),
        tap(CLIENT_ADAPTER),
    );
    let mut procs = vec![
        spawn(lab, "relay", "socat-hub", &hub)?,
        spawn(lab, "gw", "socat-gw", &gw_node)?,
        spawn(lab, "c1", "socat-c1", &player_node)?,
    ];
    let (gw_ns, c1_ns) = (&lab.node("gw")?.ns, &lab.node("c1")?.ns);
    let has = |ns: &Netns, dev: &str| ns.ip(&["link", "show", "dev", dev]).is_ok();
    wait_until("the socat nodes' TAP devices", &mut procs, |_| {
        has(gw_ns, TAP) && has(c1_ns, CLIENT_ADAPTER)
    })?;
    gw_ns.set_link_up(TAP)?;
    finish(lab, procs)
}
