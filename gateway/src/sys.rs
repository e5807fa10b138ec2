//! The gateway's two system calls that the datapath crate does not offer: a SIGINT/SIGTERM flag
//! and the MAC address of an interface. The only place in this crate where `unsafe` is allowed.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use lanparty_datapath::Mac;

/// Set by the signal handler; read by the datapath loop once per turn.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signo: libc::c_int) {
    // An atomic store is async-signal-safe.
    SHUTDOWN.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set the flag that [`shutdown_requested`] reads instead of killing
/// the process. The loop's waits are short enough (at most 200 ms) that no wake-up is needed.
///
/// # Errors
///
/// The error of `sigaction(2)`.
pub fn install_signal_handlers() -> io::Result<()> {
    for signo in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: sigaction is plain old data; all-zero is a valid value (empty mask, no flags).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SA_RESTART: system calls the signal interrupts are resumed rather than failing.
        action.sa_flags = libc::SA_RESTART;
        // SAFETY: `action` is a valid sigaction whose handler only performs an atomic store,
        // which is async-signal-safe; the old action is not requested.
        let rc = unsafe { libc::sigaction(signo, &action, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// True once SIGINT or SIGTERM arrived (after [`install_signal_handlers`]).
pub fn shutdown_requested() -> bool {
    SHUTDOWN.load(Ordering::Relaxed)
}

/// The hardware address of `ifname` (`SIOCGIFHWADDR`), asked through `sock`, any socket of the
/// interface's network namespace.
///
/// # Errors
///
/// The error of `ioctl(2)`; `InvalidInput` for a name longer than 15 bytes.
pub fn interface_mac(sock: BorrowedFd<'_>, ifname: &str) -> io::Result<Mac> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface names have 1 to 15 bytes",
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid, NUL-terminated ifreq; the kernel writes `ifru_hwaddr` only.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut octets = [0u8; 6];
    for (o, b) in octets.iter_mut().zip(sa.sa_data.iter()) {
        *o = *b as u8;
    }
    Ok(Mac(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_the_zero_mac() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&sock);
        assert_eq!(interface_mac(fd, "lo").unwrap(), Mac::ZERO);
        assert!(interface_mac(fd, "lpgw-no-such-if").is_err());
        assert!(interface_mac(fd, "a-name-far-too-long").is_err());
    }
}
