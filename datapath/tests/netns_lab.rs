//! Real-kernel tests of the namespace helpers: namespaces, leftovers, veth pairs, bridges,
//! addresses and ping. They need root and skip with a clear line otherwise.
#![cfg(target_os = "linux")]

use std::net::IpAddr;
use std::time::Duration;

use lanparty_datapath::sys::netns::{
    self, Bridge, Netns, NetnsError, Veth, cleanup_leftovers, list_namespaces, ping, test_v4,
    test_v6,
};

#[test]
fn namespace_exists_while_owned_and_is_deleted_on_drop() {
    if !netns::require_root("namespace_exists_while_owned_and_is_deleted_on_drop") {
        return;
    }
    let ns = Netns::create("life").unwrap();
    let name = ns.name().to_owned();
    assert!(name.starts_with("lplife-"));
    assert!(list_namespaces().unwrap().contains(&name));
    assert!(ns.path().exists());
    drop(ns);
    assert!(!list_namespaces().unwrap().contains(&name));
}

#[test]
fn leftovers_of_dead_processes_are_removed_and_live_ones_kept() {
    if !netns::require_root("leftovers_of_dead_processes_are_removed_and_live_ones_kept") {
        return;
    }
    // A pid that existed and is gone: a child we started and reaped.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let leftover = format!("lpcrash-{dead_pid}-7");
    let out = std::process::Command::new("ip")
        .args(["netns", "add", &leftover])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let live = Netns::create("alive").unwrap();

    let removed = cleanup_leftovers().unwrap();

    let names = list_namespaces().unwrap();
    assert!(removed.contains(&leftover), "removed {removed:?}");
    assert!(!names.contains(&leftover));
    assert!(names.contains(&live.name().to_owned()));
    assert!(!removed.contains(&live.name().to_owned()));
}

#[test]
fn addresses_outside_the_test_ranges_are_refused() {
    if !netns::require_root("addresses_outside_the_test_ranges_are_refused") {
        return;
    }
    let ns = Netns::create("addr").unwrap();
    let err = ns
        .add_addr("lo", "192.168.1.1".parse().unwrap(), 24)
        .unwrap_err();
    assert!(matches!(err, NetnsError::AddressOutOfRange { .. }), "{err}");
    let err = ns
        .add_addr("lo", "2001:db8::1".parse().unwrap(), 64)
        .unwrap_err();
    assert!(matches!(err, NetnsError::AddressOutOfRange { .. }), "{err}");
    ns.add_addr("lo", IpAddr::V4(test_v4(9, 9)), 32).unwrap();
    let shown = ns.ip(&["-4", "addr", "show", "dev", "lo"]).unwrap();
    assert!(shown.contains("198.18.9.9/32"), "{shown}");
}

/// Two hosts on a bridge in a third namespace: A -- br -- B.
struct TwoHosts {
    a: Netns,
    b: Netns,
    _bridge: Bridge,
    _veths: [Veth; 2],
    _switch: Netns,
}

fn two_hosts_on_a_bridge() -> TwoHosts {
    let a = Netns::create("hosta").unwrap();
    let b = Netns::create("hostb").unwrap();
    let switch = Netns::create("switch").unwrap();
    let va = Veth::create(Some(&a), "eth0", Some(&switch), "porta").unwrap();
    let vb = Veth::create(Some(&b), "eth0", Some(&switch), "portb").unwrap();
    let bridge = Bridge::create(&switch, "br0").unwrap();
    bridge.add_port("porta").unwrap();
    bridge.add_port("portb").unwrap();
    for (ns, host) in [(&a, 1u8), (&b, 2u8)] {
        ns.add_addr("eth0", IpAddr::V4(test_v4(1, host)), 24)
            .unwrap();
        ns.add_addr("eth0", IpAddr::V6(test_v6(1, u16::from(host))), 64)
            .unwrap();
        ns.set_link_up("eth0").unwrap();
    }
    TwoHosts {
        a,
        b,
        _bridge: bridge,
        _veths: [va, vb],
        _switch: switch,
    }
}

#[test]
fn hosts_on_a_bridge_ping_each_other_over_ipv4_and_ipv6() {
    if !netns::require_root("hosts_on_a_bridge_ping_each_other_over_ipv4_and_ipv6") {
        return;
    }
    let lab = two_hosts_on_a_bridge();
    let t = Duration::from_secs(5);
    ping(&lab.a, IpAddr::V4(test_v4(1, 2)), t).unwrap();
    ping(&lab.b, IpAddr::V4(test_v4(1, 1)), t).unwrap();
    ping(&lab.a, IpAddr::V6(test_v6(1, 2)), t).unwrap();
    // Nobody answers for an address that is not on the LAN.
    let err = ping(
        &lab.a,
        IpAddr::V4(test_v4(1, 99)),
        Duration::from_millis(300),
    )
    .unwrap_err();
    assert!(matches!(err, NetnsError::PingTimeout { .. }), "{err}");
}

#[test]
fn exec_and_spawn_run_inside_the_namespace() {
    if !netns::require_root("exec_and_spawn_run_inside_the_namespace") {
        return;
    }
    let a = Netns::create("exec").unwrap();
    let b = Netns::create("exec").unwrap();
    let _veth = Veth::create(Some(&a), "lpinside", Some(&b), "lpother").unwrap();
    let out = a.exec(&["ip", "link", "show", "lpinside"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = a.exec(&["ip", "link", "show", "lpother"]).unwrap();
    assert!(
        !out.status.success(),
        "the peer lives in the other namespace"
    );
    let child = b
        .spawn(&["ip", "link", "show", "lpother"])
        .unwrap()
        .wait_with_output()
        .unwrap();
    assert!(child.status.success());
}

#[test]
fn run_in_creates_sockets_inside_the_namespace() {
    if !netns::require_root("run_in_creates_sockets_inside_the_namespace") {
        return;
    }
    let a = Netns::create("runin").unwrap();
    let b = Netns::create("runin").unwrap();
    let _veth = Veth::create(Some(&a), "lpv0", Some(&b), "lpv1").unwrap();
    a.add_addr("lpv0", IpAddr::V4(test_v4(2, 1)), 24).unwrap();
    a.set_link_up("lpv0").unwrap();
    // A socket bound in A to A's address works, and stays usable from this thread.
    let sock = a
        .run_in(|| std::net::UdpSocket::bind((test_v4(2, 1), 0)))
        .unwrap()
        .unwrap();
    assert_eq!(sock.local_addr().unwrap().ip(), IpAddr::V4(test_v4(2, 1)));
    // The same address does not exist in B (nor here).
    let in_b = b
        .run_in(|| std::net::UdpSocket::bind((test_v4(2, 1), 0)))
        .unwrap();
    assert!(in_b.is_err());
}

#[test]
fn sysctls_are_set_per_namespace() {
    if !netns::require_root("sysctls_are_set_per_namespace") {
        return;
    }
    let a = Netns::create("sysctl").unwrap();
    let b = Netns::create("sysctl").unwrap();
    a.set_sysctl("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(a.sysctl("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(b.sysctl("net.ipv4.ip_forward").unwrap(), "0");
    assert!(matches!(
        a.set_sysctl("kernel.hostname", "x"),
        Err(NetnsError::InvalidName { .. })
    ));
}
