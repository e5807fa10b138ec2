//! The metrics endpoint: a tiny HTTP/1.1 server on the control thread serving `/metrics`
//! (Prometheus text format, encoded by `prometheus-client`) and `/status` (JSON).
//!
//! Each request asks the control loop for a fresh report, which comes from a datapath snapshot
//! ([`crate::bridge::Snapshot`]); no counter is shared across threads. The server reads at most
//! [`MAX_REQUEST`] bytes per request, gives a client [`REQUEST_TIMEOUT`] to send them, and
//! serves at most [`MAX_CLIENTS`] connections at once; it answers `GET` only and closes every
//! connection after one response.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::control::Request;
use crate::status::StatusReport;

/// Largest request (request line and headers) read, in bytes.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections served at once; further ones are closed at once.
const MAX_CLIENTS: usize = 16;

type Labels = Vec<(String, String)>;

/// Accepts connections until the control loop goes away.
pub(crate) async fn serve(listener: TcpListener, requests: mpsc::Sender<Request>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if requests.is_closed() {
            return;
        }
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            continue;
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT * 2, handle(stream, requests)).await;
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, requests: mpsc::Sender<Request>) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let read = async {
        loop {
            let n = stream.read(&mut buf[len..]).await?;
            if n == 0 {
                break;
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || len == buf.len() {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(REQUEST_TIMEOUT, read).await.is_err() {
        return Ok(());
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        )
    } else {
        match path {
            "/metrics" => {
                let (tx, rx) = oneshot::channel();
                match ask(&requests, Request::Metrics(tx), rx).await {
                    Some(text) => (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        text,
                    ),
                    None => unavailable(),
                }
            }
            "/status" => {
                let (tx, rx) = oneshot::channel();
                match ask(&requests, Request::Status(tx), rx).await {
                    Some(report) => (
                        "200 OK",
                        "application/json",
                        serde_json::to_string_pretty(&report).unwrap_or_default(),
                    ),
                    None => unavailable(),
                }
            }
            _ => (
                "404 Not Found",
                "text/plain",
                "try /metrics or /status\n".to_owned(),
            ),
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn unavailable() -> (&'static str, &'static str, String) {
    (
        "503 Service Unavailable",
        "text/plain",
        "relay is stopping\n".to_owned(),
    )
}

async fn ask<T>(
    requests: &mpsc::Sender<Request>,
    req: Request,
    rx: oneshot::Receiver<T>,
) -> Option<T> {
    requests.send(req).await.ok()?;
    tokio::time::timeout(Duration::from_secs(3), rx)
        .await
        .ok()?
        .ok()
}

fn counter_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let family = Family::<Labels, Counter>::default();
    registry.register(name, help, family.clone());
    family
}

fn gauge_family(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn gauge_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Renders a report in the Prometheus/OpenMetrics text format.
pub(crate) fn render(report: &StatusReport) -> String {
    let mut registry = Registry::with_prefix("lanparty_relay");

    let connections = Gauge::<i64>::default();
    registry.register(
        "connections",
        "QUIC connections in any state",
        connections.clone(),
    );
    connections.set(gauge_i64(report.connections));
    let rooms = Gauge::<i64>::default();
    registry.register("rooms", "Rooms with at least one member", rooms.clone());
    rooms.set(gauge_i64(report.rooms.len()));

    let c = &report.counters;
    let relay_counters: [(&str, &str, u64); 11] = [
        (
            "udp_datagrams_received",
            "UDP datagrams the QUIC endpoint received",
            c.udp_datagrams_received,
        ),
        (
            "udp_datagrams_sent",
            "UDP datagrams sent",
            c.udp_datagrams_sent,
        ),
        (
            "unroutable_datagrams",
            "UDP datagrams no connection could use",
            c.unroutable_datagrams,
        ),
        (
            "rejected_packets",
            "QUIC packets a connection could not authenticate",
            c.rejected_datagrams,
        ),
        (
            "connections_accepted",
            "QUIC connections accepted",
            c.connections_accepted,
        ),
        (
            "connections_refused",
            "QUIC connections refused at the connection limit",
            c.connections_refused,
        ),
        (
            "handshakes_timed_out",
            "QUIC handshakes that did not finish in time",
            c.handshakes_timed_out,
        ),
        (
            "unadmitted_datagrams",
            "Overlay datagrams from connections not admitted into a room",
            c.unadmitted_datagrams,
        ),
        (
            "datagrams_dropped_tx",
            "Outgoing DATAGRAMs dropped on full per-peer send queues",
            c.datagrams_dropped_tx,
        ),
        (
            "datagrams_dropped_rx",
            "Incoming DATAGRAMs dropped because the relay fell behind",
            c.datagrams_dropped_rx,
        ),
        ("hellos_admitted", "Hellos admitted", c.admitted),
    ];
    for (name, help, value) in relay_counters {
        let counter = Counter::<u64>::default();
        registry.register(name, help, counter.clone());
        counter.inc_by(value);
    }
    let rejects = counter_family(&mut registry, "hellos_rejected", "Hellos rejected, by code");
    for (code, n) in &c.rejects {
        rejects.get_or_create(&labels(&[("code", code)])).inc_by(*n);
    }

    let room_peers = gauge_family(&mut registry, "room_peers", "Members of a room");
    let room_macs = gauge_family(
        &mut registry,
        "room_mac_table_entries",
        "Entries in a room's MAC table (client MACs plus learned MACs)",
    );
    let room_floods = counter_family(
        &mut registry,
        "room_floods",
        "Frames a room flooded (broadcast, multicast, unknown unicast)",
    );
    let room_drops = counter_family(
        &mut registry,
        "room_drops",
        "Datagrams a room's switch dropped, by reason",
    );
    let peer_frames_in = counter_family(
        &mut registry,
        "peer_frames_in",
        "Ethernet frames received from a peer",
    );
    let peer_datagrams_in = counter_family(
        &mut registry,
        "peer_datagrams_in",
        "Overlay datagrams received from a peer",
    );
    let peer_bytes_in = counter_family(
        &mut registry,
        "peer_bytes_in",
        "Overlay bytes received from a peer",
    );
    let peer_datagrams_out = counter_family(
        &mut registry,
        "peer_datagrams_out",
        "Overlay datagrams forwarded to a peer",
    );
    let peer_bytes_out = counter_family(
        &mut registry,
        "peer_bytes_out",
        "Overlay bytes forwarded to a peer",
    );
    let peer_drops = counter_family(
        &mut registry,
        "peer_drops",
        "Datagrams from a peer that the switch dropped, by reason",
    );
    let peer_rtt = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "peer_rtt_seconds",
        "Smoothed QUIC round-trip time to a peer",
        peer_rtt.clone(),
    );
    let peer_sent = counter_family(
        &mut registry,
        "peer_quic_sent_packets",
        "QUIC packets sent to a peer",
    );
    let peer_lost = counter_family(
        &mut registry,
        "peer_quic_lost_packets",
        "QUIC packets to a peer that were lost",
    );

    for room in &report.rooms {
        let r = labels(&[("room", &room.code)]);
        room_peers
            .get_or_create(&r)
            .set(gauge_i64(room.peers.len()));
        room_macs.get_or_create(&r).set(gauge_i64(room.mac_table));
        room_floods.get_or_create(&r).inc_by(room.floods);
        for (reason, n) in &room.drops {
            room_drops
                .get_or_create(&labels(&[("room", &room.code), ("reason", reason)]))
                .inc_by(*n);
        }
        for p in &room.peers {
            let id = p.peer_id.to_string();
            let l = labels(&[("room", &room.code), ("peer", &id), ("role", &p.role)]);
            peer_frames_in.get_or_create(&l).inc_by(p.frames_in);
            peer_datagrams_in.get_or_create(&l).inc_by(p.datagrams_in);
            peer_bytes_in.get_or_create(&l).inc_by(p.bytes_in);
            peer_datagrams_out.get_or_create(&l).inc_by(p.datagrams_out);
            peer_bytes_out.get_or_create(&l).inc_by(p.bytes_out);
            peer_rtt.get_or_create(&l).set(p.rtt_ms / 1000.0);
            peer_sent.get_or_create(&l).inc_by(p.sent_packets);
            peer_lost.get_or_create(&l).inc_by(p.lost_packets);
            for (reason, n) in &p.drops {
                peer_drops
                    .get_or_create(&labels(&[
                        ("room", &room.code),
                        ("peer", &id),
                        ("reason", reason),
                    ]))
                    .inc_by(*n);
            }
        }
    }

    let mut out = String::new();
    if encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{PeerReport, RoomReport};

    #[test]
    fn metrics_carry_room_and_peer_counters_with_labels() {
        let mut report = StatusReport {
            connections: 3,
            ..StatusReport::default()
        };
        report.counters.rejects.insert("bad_secret".into(), 2);
        report.rooms.push(RoomReport {
            code: "lan-party".into(),
            floods: 7,
            drops: [("spoofed_source".to_owned(), 4)].into(),
            peers: vec![PeerReport {
                peer_id: 9,
                role: "client".into(),
                frames_in: 11,
                rtt_ms: 25.0,
                ..PeerReport::default()
            }],
            ..RoomReport::default()
        });
        let text = render(&report);
        assert!(text.contains("lanparty_relay_connections 3"), "{text}");
        assert!(
            text.contains("lanparty_relay_hellos_rejected_total{code=\"bad_secret\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "lanparty_relay_room_drops_total{room=\"lan-party\",reason=\"spoofed_source\"} 4"
        ));
        assert!(text.contains(
            "lanparty_relay_peer_frames_in_total{room=\"lan-party\",peer=\"9\",role=\"client\"} 11"
        ));
        assert!(text.contains(
            "lanparty_relay_peer_rtt_seconds{room=\"lan-party\",peer=\"9\",role=\"client\"} 0.025"
        ));
        assert!(text.ends_with("# EOF\n"));
    }
}
