//! Plain UDP ping-pong on loopback: the floor for single-datagram latency.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// Round-trip times of `count` datagrams of `size` bytes echoed by a thread over loopback.
pub(crate) fn ping(count: usize, size: usize) -> anyhow::Result<Vec<Duration>> {
    let server = UdpSocket::bind("127.0.0.1:0")?;
    let client = UdpSocket::bind("127.0.0.1:0")?;
    server.set_read_timeout(Some(Duration::from_secs(2)))?;
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    let server_addr = server.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; 65_536];
        for _ in 0..count {
            let (n, from) = server.recv_from(&mut buf)?;
            server.send_to(&buf[..n], from)?;
        }
        Ok(())
    });
    let payload = vec![0x5au8; size];
    let mut buf = vec![0u8; 65_536];
    let mut rtts = Vec::with_capacity(count);
    for _ in 0..count {
        let t0 = Instant::now();
        client.send_to(&payload, server_addr)?;
        client.recv_from(&mut buf)?;
        rtts.push(t0.elapsed());
    }
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    Ok(rtts)
}
