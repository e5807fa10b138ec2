//! The direct (no-tunnel) lab as a spec: it comes up, DHCP, ping, broadcast both ways, IPv6
//! link-local and iperf3 work between a client and a party LAN host, and nothing is left after
//! drop. Needs root; skips clearly without it.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lanparty_datapath::sys::netns::{list_namespaces, require_root};
use lanparty_perf::lab::{
    DHCP_FIRST, DHCP_LAST, Lab, LabConfig, LabError, NAMESPACE_PREFIX, PingPlan, ReportOptions,
    Status, TunnelBinaries, TunnelSettings, broadcast_reaches, cleanup_lab_leftovers,
    dnsmasq_installed, iperf3_installed, iperf3_tcp, link_local_addr, ping_stats,
};

/// The lab tests run one at a time, so that each can check that no namespace of this process
/// is left behind.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Lab namespaces of this process.
fn our_lab_namespaces() -> Vec<String> {
    let mark = format!("-{}-", std::process::id());
    list_namespaces()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(NAMESPACE_PREFIX) && n.contains(&mark))
        .collect()
}

fn quick_ping() -> PingPlan {
    PingPlan {
        count: 10,
        budget: Duration::from_secs(5),
        ..PingPlan::default()
    }
}

#[test]
fn direct_lab_connects_a_client_to_the_party_lan_and_leaves_nothing_behind() {
    if !require_root("direct_lab_connects_a_client_to_the_party_lan_and_leaves_nothing_behind") {
        return;
    }
    let _serial = serial();
    if !dnsmasq_installed() {
        eprintln!("direct lab test: skipped: dnsmasq is not installed (apt-get install dnsmasq)");
        return;
    }
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let mut lines = Vec::new();
    let mut lab = Lab::build(
        &LabConfig::direct(),
        &mut |l: &str| lines.push(l.to_owned()),
        &stop,
    )
    .expect("the direct lab comes up");
    assert!(lines.iter().any(|l| l.contains("lab is up")), "{lines:?}");

    // LAN hosts are static; the direct clients got their addresses from dnsmasq.
    let c2_lease = lab.node("c2").unwrap().lan_addr;
    let c2_seen = lab.wait_for_lan_addr("c2", Duration::from_secs(1)).unwrap();
    assert_eq!(Some(c2_seen), c2_lease);
    let host1 = lab.node("host1").unwrap();
    let c1 = lab.node("c1").unwrap();
    let h_addr = host1.lan_addr.expect("host1 has a static address");
    assert_eq!(h_addr.to_string(), "198.18.0.11");
    let c_addr = c1.lan_addr.expect("c1 has a DHCP address");
    assert!(
        (DHCP_FIRST..=DHCP_LAST).contains(&c_addr),
        "{c_addr} is outside dnsmasq's range"
    );
    let dnsmasq = lab.dnsmasq_pid().expect("dnsmasq runs");
    assert!(Path::new(&format!("/proc/{dnsmasq}")).exists());
    let leases = std::fs::read_to_string(lab.dir().join("dnsmasq.leases")).unwrap();
    assert!(leases.contains(&c_addr.to_string()), "{leases}");

    // Ping works.
    let s = ping_stats(&c1.ns, IpAddr::V4(h_addr), None, &quick_ping()).unwrap();
    assert_eq!((s.sent, s.received), (10, 10), "{s:?}");
    assert!(s.median_us.unwrap() > 0.0 && s.p99_us.unwrap() >= s.median_us.unwrap());

    // Broadcast from the client reaches host1 and back; the Internet is not on the party LAN.
    let wait = Duration::from_secs(2);
    let got = broadcast_reaches(&c1.ns, "lan0", &host1.ns, 47_001, wait).unwrap();
    assert_eq!(got.map(|a| a.ip()), Some(IpAddr::V4(c_addr)));
    let back = broadcast_reaches(&host1.ns, "eth0", &c1.ns, 47_002, wait).unwrap();
    assert_eq!(back.map(|a| a.ip()), Some(IpAddr::V4(h_addr)));
    let relay = lab.node("relay").unwrap();
    let stray = broadcast_reaches(
        &relay.ns,
        "wan0",
        &host1.ns,
        47_003,
        Duration::from_millis(500),
    )
    .unwrap();
    assert_eq!(
        stray, None,
        "a broadcast on the Internet leaked onto the party LAN"
    );

    // IPv6 link-local works.
    let ll = link_local_addr(&host1.ns, "eth0", Duration::from_secs(3)).unwrap();
    let s6 = ping_stats(&c1.ns, IpAddr::V6(ll), Some("lan0"), &quick_ping()).unwrap();
    assert_eq!(s6.received, 10, "{s6:?}");

    // A short iperf3 run reports non-zero throughput.
    if iperf3_installed() {
        let t = iperf3_tcp(&c1.ns, &host1.ns, IpAddr::V4(h_addr), 1, lab.dir()).unwrap();
        assert!(t.received_bps > 0.0, "{t:?}");
    } else {
        eprintln!("direct lab test: iperf3 part skipped: iperf3 is not installed");
    }

    // The report has every row and all pass.
    let opts = ReportOptions {
        ping: quick_ping(),
        iperf_secs: 1,
        udp_rates: false,
        ..ReportOptions::default()
    };
    let report = lab.report(&opts, &mut |_| {}, &stop);
    let md = report.to_markdown();
    assert!(report.all_passed(), "{md}");
    for check in ["DHCP address", "ping RTT", "broadcast", "IPv6 link-local"] {
        assert!(
            report.checks.iter().any(|c| c.check == check),
            "{check} missing: {md}"
        );
    }
    assert_eq!(
        report.find("DHCP address", "c2").unwrap().status,
        Status::Pass
    );

    // Everything is gone after drop.
    let names = lab.namespace_names();
    let dir = lab.dir().to_path_buf();
    drop(lab);
    let left = list_namespaces().unwrap();
    for name in &names {
        assert!(!left.contains(name), "{name} survived the drop");
    }
    assert!(
        !Path::new(&format!("/proc/{dnsmasq}")).exists(),
        "dnsmasq {dnsmasq} survived"
    );
    assert!(!dir.exists(), "{} survived", dir.display());
    assert_eq!(our_lab_namespaces(), Vec::<String>::new());
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn tunnel_variant_names_missing_programs_and_how_to_build_them() {
    if !require_root("tunnel_variant_names_missing_programs_and_how_to_build_them") {
        return;
    }
    let _serial = serial();
    let stop = AtomicBool::new(false);
    let config = LabConfig {
        dhcp: false,
        ..LabConfig::tunnel()
    };
    let mut lab = Lab::build(&config, &mut |_| {}, &stop).expect("the tunnel lab comes up");
    // Without the tunnel the clients are not on the party LAN.
    assert_eq!(lab.node("c1").unwrap().lan_if, None);
    let host1 = lab.node("host1").unwrap();
    let c1 = lab.node("c1").unwrap();
    let stray = broadcast_reaches(
        &c1.ns,
        "wan0",
        &host1.ns,
        47_004,
        Duration::from_millis(500),
    )
    .unwrap();
    assert_eq!(stray, None);
    // The relay is reachable over the Internet from a client.
    let relay = lab.node("relay").unwrap().wan_addr.unwrap();
    let s = ping_stats(&c1.ns, IpAddr::V4(relay), None, &quick_ping()).unwrap();
    assert_eq!(s.received, 10);

    // A directory without the programs: the error names them and the build command.
    let empty = lab.dir().join("no-programs");
    std::fs::create_dir_all(&empty).unwrap();
    let err = lab
        .start_tunnel_with(
            &TunnelBinaries::in_dir(&empty),
            &TunnelSettings::default(),
            &mut |_| {},
        )
        .unwrap_err();
    assert!(matches!(err, LabError::ProgramsMissing { .. }), "{err}");
    let text = err.to_string();
    for needle in [
        "lanparty-relay",
        "lanparty-gateway",
        "lanparty-client",
        "cargo build --release --workspace",
    ] {
        assert!(text.contains(needle), "{needle} missing in: {text}");
    }
    assert!(lab.tunnel().is_none());
    let report = lab.report(&ReportOptions::default(), &mut |_| {}, &stop);
    assert!(
        report.checks.iter().all(|c| c.status == Status::Skipped),
        "{report:?}"
    );
}

#[test]
fn an_interrupted_build_stops_and_cleans_up() {
    if !require_root("an_interrupted_build_stops_and_cleans_up") {
        return;
    }
    let _serial = serial();
    let stop = AtomicBool::new(false);
    // Ctrl-C arrives while the gateway is being wired.
    let mut on_progress = |line: &str| {
        if line.starts_with("gateway") {
            stop.store(true, Ordering::Relaxed);
        }
    };
    let err = Lab::build(&LabConfig::direct(), &mut on_progress, &stop).unwrap_err();
    assert!(matches!(err, LabError::Interrupted), "{err}");
    assert_eq!(our_lab_namespaces(), Vec::<String>::new());
}

#[test]
fn leftovers_of_a_crashed_run_are_removed() {
    if !require_root("leftovers_of_a_crashed_run_are_removed") {
        return;
    }
    let _serial = serial();
    // A "crashed run": a pid that does not exist, its namespace, its directory, and a process
    // standing in for its dnsmasq whose command line names that directory.
    let dead = (4_000_000..4_194_304)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let ns = format!("{NAMESPACE_PREFIX}x-{dead}-0");
    let dir = std::env::temp_dir().join(format!("lplab-{dead}-0"));
    std::fs::create_dir_all(&dir).unwrap();
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mut orphan = std::process::Command::new("sh")
        .args(["-c", "sleep 30; true", &dir.to_string_lossy()])
        .spawn()
        .unwrap();
    std::fs::write(dir.join("dnsmasq.pid"), format!("{}\n", orphan.id())).unwrap();

    // The kernel shows the new command line once the shell has started.
    let cmdline_path = format!("/proc/{}/cmdline", orphan.id());
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut cmdline = String::new();
    while Instant::now() < deadline && !cmdline.contains(&*dir.to_string_lossy()) {
        std::thread::sleep(Duration::from_millis(10));
        cmdline = std::fs::read_to_string(&cmdline_path).unwrap_or_default();
    }
    let removed = cleanup_lab_leftovers().unwrap();

    let status = orphan.wait_timeout_or_kill(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the orphan was not killed: removed {removed:?}, its command line {cmdline:?}"
    );
    assert!(!list_namespaces().unwrap().contains(&ns), "{ns} survived");
    assert!(!dir.exists(), "{} survived", dir.display());
}

/// Waits for a child a bounded time; kills it when the time is up.
trait WaitTimeout {
    fn wait_timeout_or_kill(&mut self, timeout: Duration) -> Option<std::process::ExitStatus>;
}

impl WaitTimeout for std::process::Child {
    fn wait_timeout_or_kill(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.kill();
        let _ = self.wait();
        None
    }
}

#[test]
fn without_dhcp_direct_clients_fall_back_to_static_addresses() {
    if !require_root("without_dhcp_direct_clients_fall_back_to_static_addresses") {
        return;
    }
    let _serial = serial();
    let stop = AtomicBool::new(false);
    let config = LabConfig {
        dhcp: false,
        ..LabConfig::direct()
    };
    let lab = Lab::build(&config, &mut |_| {}, &stop).expect("the direct lab comes up");
    assert_eq!(lab.dnsmasq_pid(), None);
    let c1 = lab.node("c1").unwrap();
    assert_eq!(
        c1.lan_addr.map(|a| a.to_string()).as_deref(),
        Some("198.18.0.101")
    );
    let host1 = lab.node("host1").unwrap();
    let s = ping_stats(
        &c1.ns,
        IpAddr::V4(host1.lan_addr.unwrap()),
        None,
        &quick_ping(),
    )
    .unwrap();
    assert_eq!(s.received, 10);
    let opts = ReportOptions {
        ping: quick_ping(),
        iperf_secs: 0,
        ..ReportOptions::default()
    };
    let report = lab.report(&opts, &mut |_| {}, &stop);
    assert_eq!(
        report.find("DHCP address", "c1").unwrap().status,
        Status::Skipped
    );
    assert_eq!(
        report.find("ping RTT", "c1 -> host1").unwrap().status,
        Status::Pass
    );
    assert!(report.all_passed(), "{}", report.to_markdown());
}
