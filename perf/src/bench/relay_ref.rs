//! The baseline `bench relay` compares against: a relay built the usual way on the `quinn`
//! crate (tokio), with the same switch ([`Room`]) and the same control handshake as
//! lanparty-relay, so the same benchmark peers talk to both.
//!
//! One current-thread tokio runtime on one thread named [`THREAD`] runs the endpoint, one task
//! per connection (hello on the control stream, then `read_datagram` → `Room` →
//! `send_datagram` to every egress connection with refcount clones) and shares the rooms
//! through an `Rc<RefCell<…>>`, so there are no locks of ours and no cross-thread hops. The
//! QUIC transport mirrors ours where quinn lets it: 64 KiB datagram send buffer, 128 KiB
//! receive buffer, one peer-opened bidirectional stream, 1200-byte initial MTU with PMTUD up to
//! 1472, GSO/GRO through quinn-udp, and the same 4 MiB UDP socket buffers. What it leaves out (admission limits, stats, metrics) costs
//! nothing per datagram in lanparty-relay either.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lanparty_control::codec::{self, Decoder};
use lanparty_control::msg::{self, Message, PROTOCOL_VERSION, Welcome};
use lanparty_datapath::quic::tls::{self, Fingerprint, ServerIdentity};
use lanparty_datapath::switch::{PeerId, Role, Room, RoomConfig, Verdict};
use tokio::sync::oneshot;

/// Name of the baseline relay's thread (what its CPU time is read by).
pub(crate) const THREAD: &str = "ref-relay";

/// A running baseline relay.
#[derive(Debug)]
pub(crate) struct RefRelay {
    addr: SocketAddr,
    pin: Fingerprint,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, Rc<RefCell<RoomSlot>>>,
    next_peer: u64,
}

struct RoomSlot {
    room: Room,
    conns: HashMap<PeerId, quinn::Connection>,
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_send_buffer_size(64 * 1024)
        .datagram_receive_buffer_size(Some(128 * 1024))
        .keep_alive_interval(Some(Duration::from_secs(5)))
        .initial_rtt(Duration::from_millis(100))
        .initial_mtu(1200)
        .min_mtu(1200);
    let mut mtud = quinn::MtuDiscoveryConfig::default();
    mtud.upper_bound(1472);
    t.mtu_discovery_config(Some(mtud));
    Arc::new(t)
}

impl RefRelay {
    /// Starts the baseline on 127.0.0.1:0 with a fresh self-signed certificate; every room
    /// uses `room_config`.
    pub(crate) fn start(room_config: RoomConfig) -> anyhow::Result<Self> {
        let ck = rcgen::generate_simple_self_signed(vec!["lanparty-relay".to_owned()])?;
        let identity = ServerIdentity {
            chain: vec![ck.cert.der().clone()],
            key: rustls::pki_types::PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into(),
        };
        let pin = identity.fingerprint();
        let crypto = tls::server_crypto(identity)?;
        let mut server = quinn::ServerConfig::with_crypto(crypto);
        server.transport_config(transport());
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        // The same socket buffers as lanparty-relay asks for, so that both queue as much in
        // the kernel when they fall behind.
        let sock = socket2::SockRef::from(&socket);
        sock.set_recv_buffer_size(super::relay::socket_buffer())?;
        sock.set_send_buffer_size(super::relay::socket_buffer())?;
        let addr = socket.local_addr()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(THREAD.to_owned())
            .spawn(move || serve(server, socket, room_config, stop_rx))?;
        Ok(Self {
            addr,
            pin,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn fingerprint(&self) -> Fingerprint {
        self.pin
    }

    /// Closes every connection and joins the thread.
    pub(crate) fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the baseline relay panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for RefRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn serve(
    server: quinn::ServerConfig,
    socket: std::net::UdpSocket,
    room_config: RoomConfig,
    stop: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let state = Rc::new(RefCell::new(State::default()));
        let accept = async {
            while let Some(incoming) = endpoint.accept().await {
                let state = state.clone();
                let config = room_config.clone();
                tokio::task::spawn_local(async move {
                    // A failed peer only ends its own task.
                    let _ = connection(incoming, state, config).await;
                });
            }
        };
        tokio::select! {
            () = accept => {}
            _ = stop => {}
        }
        endpoint.close(0u32.into(), b"bench over");
        let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
        anyhow::Ok(())
    })
}

async fn connection(
    incoming: quinn::Incoming,
    state: Rc<RefCell<State>>,
    config: RoomConfig,
) -> anyhow::Result<()> {
    let conn = incoming.await?;
    let (mut send, mut recv) = conn.accept_bi().await?;
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 4096];
    let hello = loop {
        let n = recv.read(&mut buf).await?.context("control stream ended")?;
        let mut rest = &buf[..n];
        let mut hello = None;
        while !rest.is_empty() {
            let took = decoder.push(rest);
            rest = &rest[took..];
            if let Some(Message::Hello(h)) = decoder.poll()? {
                hello = Some(h);
                break;
            }
            if took == 0 {
                break;
            }
        }
        if let Some(h) = hello {
            break h;
        }
    };
    let code = hello.room.as_str().to_owned();
    let peer = {
        let mut st = state.borrow_mut();
        st.next_peer += 1;
        let peer = PeerId(st.next_peer);
        let slot = st
            .rooms
            .entry(code.clone())
            .or_insert_with(|| {
                Rc::new(RefCell::new(RoomSlot {
                    room: Room::new(config),
                    conns: HashMap::new(),
                }))
            })
            .clone();
        let mut s = slot.borrow_mut();
        s.room
            .add_peer(peer, Role::Client { mac: hello.mac })
            .context("switch refused the peer")?;
        s.conns.insert(peer, conn.clone());
        drop(s);
        (peer, slot)
    };
    let (peer, slot) = peer;
    let welcome = Message::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        peer_id: msg::PeerId(peer.0),
        room_budget: hello.datagram_budget,
        max_frame: 1518,
        peers: Vec::new(),
    });
    send.write_all(&codec::encode(&welcome)?).await?;
    let mut out = Vec::with_capacity(64);
    let result = loop {
        let datagram = match conn.read_datagram().await {
            Ok(d) => d,
            Err(e) => break e,
        };
        let mut slot = slot.borrow_mut();
        let slot = &mut *slot;
        if slot
            .room
            .handle_datagram(Instant::now(), peer, &datagram, &mut out)
            == Verdict::Forward
        {
            for p in &out {
                if let Some(c) = slot.conns.get(p) {
                    let _ = c.send_datagram(datagram.clone());
                }
            }
        }
    };
    let empty = {
        let mut s = slot.borrow_mut();
        s.room.remove_peer(peer);
        s.conns.remove(&peer);
        s.room.peer_count() == 0
    };
    if empty {
        state.borrow_mut().rooms.remove(&code);
    }
    drop(send);
    Err(result.into())
}
