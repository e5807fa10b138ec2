//! The reference the QUIC benchmark compares against: the same datagram workload on the `quinn`
//! crate (tokio), one current-thread runtime per side, each on its own thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::{Throughput, Workload, thread_run_delay};
use crate::sys::thread_cpu_time;

const ALPN: &[u8] = b"lanparty-bench";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Same datagram buffers as our driver, so both sides queue the same amount.
    t.datagram_send_buffer_size(super::DATAGRAM_BUFFER);
    t.datagram_receive_buffer_size(Some(super::DATAGRAM_BUFFER));
    Arc::new(t)
}

fn configs() -> anyhow::Result<(quinn::ServerConfig, quinn::ClientConfig)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server)?));
    server.transport_config(transport());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client)?));
    client.transport_config(transport());
    Ok((server, client))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Sends datagrams of `workload.sizes` for `workload.duration` from one thread and counts them
/// on another; returns what the receiver saw and each side's thread CPU time.
pub(crate) fn throughput(workload: &Workload) -> anyhow::Result<Throughput> {
    let (server_cfg, client_cfg) = configs()?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let duration = workload.duration;
    let receiver = std::thread::spawn(move || -> anyhow::Result<(u64, u64, Duration, Duration)> {
        let rt = runtime()?;
        rt.block_on(async move {
            let endpoint = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse()?)?;
            addr_tx.send(endpoint.local_addr()?)?;
            let conn = endpoint.accept().await.context("no connection")?.await?;
            let cpu0 = thread_cpu_time();
            let delay0 = thread_run_delay();
            let (mut n, mut bytes) = (0u64, 0u64);
            // The sender closes the connection when it is done.
            while let Ok(d) = conn.read_datagram().await {
                n += 1;
                bytes += d.len() as u64;
            }
            Ok((
                n,
                bytes,
                thread_cpu_time() - cpu0,
                thread_run_delay() - delay0,
            ))
        })
    });
    let server_addr = addr_rx.recv_timeout(Duration::from_secs(10))?;
    let sizes = workload.sizes.clone();
    let sender = std::thread::spawn(
        move || -> anyhow::Result<(u64, Duration, Duration, Duration)> {
            let rt = runtime()?;
            rt.block_on(async move {
                let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
                endpoint.set_default_client_config(client_cfg);
                let conn = endpoint.connect(server_addr, "localhost")?.await?;
                // Like our driver, quinn starts at a 1200-byte MTU; give path MTU discovery up to
                // 2 s to make room for the largest size, so both stacks send the same payloads.
                let largest = sizes.iter().copied().max().unwrap_or(0);
                let pmtud = Instant::now();
                while conn.max_datagram_size().is_some_and(|m| m < largest)
                    && pmtud.elapsed() < Duration::from_secs(2)
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let max = conn.max_datagram_size().context("peer refuses datagrams")?;
                let payloads: Vec<Bytes> = sizes
                    .iter()
                    .map(|&s| Bytes::from(vec![0xa5u8; s.min(max)]))
                    .collect();
                let cpu0 = thread_cpu_time();
                let delay0 = thread_run_delay();
                let start = Instant::now();
                let mut sent = 0u64;
                while start.elapsed() < duration {
                    for p in &payloads {
                        conn.send_datagram_wait(p.clone()).await?;
                        sent += 1;
                    }
                }
                let wall = start.elapsed();
                // Let queued datagrams drain before closing.
                tokio::time::sleep(Duration::from_millis(100)).await;
                conn.close(0u32.into(), b"done");
                endpoint.wait_idle().await;
                Ok((
                    sent,
                    thread_cpu_time() - cpu0,
                    wall,
                    thread_run_delay() - delay0,
                ))
            })
        },
    );
    let (sent, send_cpu, wall, send_starved) = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let (received, bytes, recv_cpu, recv_starved) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    if received == 0 {
        bail!("quinn reference: no datagram arrived");
    }
    Ok(Throughput {
        sent,
        received,
        bytes,
        wall,
        send_cpu,
        recv_cpu,
        send_starved,
        recv_starved,
    })
}

/// Round-trip times of single datagrams echoed by the peer, one in flight at a time.
pub(crate) fn ping(count: usize, size: usize) -> anyhow::Result<Vec<Duration>> {
    let (server_cfg, client_cfg) = configs()?;
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let echo = std::thread::spawn(move || -> anyhow::Result<()> {
        runtime()?.block_on(async move {
            let endpoint = quinn::Endpoint::server(server_cfg, "127.0.0.1:0".parse()?)?;
            addr_tx.send(endpoint.local_addr()?)?;
            let conn = endpoint.accept().await.context("no connection")?.await?;
            while let Ok(d) = conn.read_datagram().await {
                conn.send_datagram(d)?;
            }
            Ok(())
        })
    });
    let server_addr = addr_rx.recv_timeout(Duration::from_secs(10))?;
    let rtts = runtime()?.block_on(async move {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
        endpoint.set_default_client_config(client_cfg);
        let conn = endpoint.connect(server_addr, "localhost")?.await?;
        let payload = Bytes::from(vec![0x5au8; size]);
        let mut rtts = Vec::with_capacity(count);
        for _ in 0..count {
            let t0 = Instant::now();
            conn.send_datagram(payload.clone())?;
            tokio::time::timeout(Duration::from_secs(2), conn.read_datagram()).await??;
            rtts.push(t0.elapsed());
        }
        conn.close(0u32.into(), b"done");
        endpoint.wait_idle().await;
        anyhow::Ok(rtts)
    })?;
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo panicked"))??;
    Ok(rtts)
}
