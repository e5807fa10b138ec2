//! Virtual network adapters: the portable vocabulary and the Windows backends.
//!
//! The client's loop sees an adapter through the small [`VirtualAdapter`] trait: it reads
//! frames (or packets) without blocking, writes them, and waits on a [`WaitHandle`] when there
//! is nothing to read. What an adapter carries is its [`AdapterKind`]:
//!
//! | kind | platform | carries | driver |
//! |---|---|---|---|
//! | [`AdapterKind::Tap`] | Linux, Windows | Ethernet frames (true L2: IPX works) | Linux: built in; Windows: tap-windows6 |
//! | [`AdapterKind::Tun`] | Linux | IP packets (L3) | built in |
//! | [`AdapterKind::Wintun`] | Windows | IP packets (L3) | `wintun.dll` next to the executable |
//!
//! For L3 kinds the client emulates Ethernet itself (see [`crate::l2emu`]).
//!
//! # Defaults
//!
//! Linux defaults to TAP: the kernel has it built in and it carries every Ethernet frame, so
//! non-IP games (IPX) work. Windows defaults to wintun: the whole driver ships inside
//! `wintun.dll`, which the client loads from next to `lanparty-client.exe` and which installs
//! its signed driver on first use. A player copies one file and nothing else; tap-windows6 needs
//! a separate driver installer and an adapter created by hand, so it is the opt-in choice
//! (`--adapter tap`) for players who need non-IP protocols on Windows.
//!
//! # Installing the Windows drivers (text for the README)
//!
//! **wintun** (default): download the zip from <https://www.wintun.net>, and copy
//! `wintun/bin/amd64/wintun.dll` (`arm64` on ARM PCs) into the folder that holds
//! `lanparty-client.exe`. Run the client as administrator: creating the adapter needs it.
//!
//! **tap-windows6** (`--adapter tap`, for IPX and other non-IP games): install the TAP driver,
//! either with OpenVPN's installer (keep "TAP Virtual Ethernet Adapter" selected) or with the
//! standalone tap-windows6 installer from OpenVPN. If no "TAP-Windows Adapter V9" shows up in
//! the network connections, create one from an administrator prompt with
//! `tapctl create --hwid root\tap0901` (`tapctl.exe` is in `C:\Program Files\OpenVPN\bin`). The
//! client uses the first TAP adapter no other program has open (or the one named with its
//! configuration).
//!
//! # Layout
//!
//! - this module: kinds, the trait, the wait handle and the errors, all portable;
//! - [`iphelper`]: applying interface changes (addresses, metric, MTU, routes) through the
//!   Windows IP Helper API; its result types are portable, its functions Windows-only;
//! - [`tap`]: tap-windows6 (ioctl codes, registry lookup, device path; the adapter on Windows);
//! - [`wintun`]: the wintun backend (DLL search order; the adapter on Windows).
//!
//! Every `unsafe` call lives in the crate's private `sys` module; these modules are safe code
//! and make no decision about metrics, routes or addresses (that is [`crate::winplan`]'s job).

use std::fmt;
use std::io;
use std::str::FromStr;

use lanparty_datapath::Mac;

pub mod iphelper;
pub mod tap;
pub mod wintun;

/// What a virtual adapter carries, and which driver provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdapterKind {
    /// A TAP device: whole Ethernet frames (Linux TAP, Windows tap-windows6).
    Tap,
    /// A Linux TUN device: IP packets without an Ethernet header.
    Tun,
    /// A Windows wintun adapter: IP packets without an Ethernet header.
    Wintun,
}

impl AdapterKind {
    /// Whether the adapter reads and writes whole Ethernet frames. When false it carries IP
    /// packets and the client must emulate Ethernet (ARP, neighbour discovery, DHCP).
    pub const fn carries_ethernet(self) -> bool {
        matches!(self, Self::Tap)
    }

    /// The word used on the command line and in the configuration file.
    pub const fn word(self) -> &'static str {
        match self {
            Self::Tap => "tap",
            Self::Tun => "tun",
            Self::Wintun => "wintun",
        }
    }

    /// The kind used when the player names none: TAP on Linux, wintun on Windows (see the
    /// module documentation for why).
    pub const fn default_for(platform: Platform) -> Self {
        match platform {
            Platform::Linux => Self::Tap,
            Platform::Windows => Self::Wintun,
        }
    }

    /// Whether `platform` has a backend for this kind.
    pub fn is_available_on(self, platform: Platform) -> bool {
        platform.kinds().contains(&self)
    }

    /// Parses a command-line word (ASCII case-insensitive, surrounding spaces ignored) and
    /// checks that `platform` has the kind.
    ///
    /// # Errors
    ///
    /// [`ParseAdapterKindError::Unknown`] for a word that names no kind,
    /// [`ParseAdapterKindError::Unavailable`] for a kind of another platform (`tun` on
    /// Windows, `wintun` on Linux).
    pub fn parse_for(word: &str, platform: Platform) -> Result<Self, ParseAdapterKindError> {
        let trimmed = word.trim();
        let kind = [Self::Tap, Self::Tun, Self::Wintun]
            .into_iter()
            .find(|kind| kind.word().eq_ignore_ascii_case(trimmed))
            .ok_or_else(|| ParseAdapterKindError::Unknown {
                // A word from the command line: keep the message short whatever was typed.
                word: trimmed.chars().take(32).collect(),
                platform,
            })?;
        if kind.is_available_on(platform) {
            Ok(kind)
        } else {
            Err(ParseAdapterKindError::Unavailable { kind, platform })
        }
    }
}

impl fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

impl FromStr for AdapterKind {
    type Err = ParseAdapterKindError;

    /// Parses for the platform this binary was built for ([`Platform::CURRENT`]).
    fn from_str(word: &str) -> Result<Self, Self::Err> {
        Self::parse_for(word, Platform::CURRENT)
    }
}

impl Default for AdapterKind {
    /// [`AdapterKind::default_for`] the platform this binary was built for.
    fn default() -> Self {
        Self::default_for(Platform::CURRENT)
    }
}

/// The platforms the client runs on; each has its own set of adapter kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Linux (also what non-Windows builds, used in tests, count as).
    Linux,
    /// Windows.
    Windows,
}

impl Platform {
    /// The platform this binary was built for.
    #[cfg(windows)]
    pub const CURRENT: Self = Self::Windows;
    /// The platform this binary was built for.
    #[cfg(not(windows))]
    pub const CURRENT: Self = Self::Linux;

    /// The adapter kinds this platform has a backend for, default first.
    pub const fn kinds(self) -> &'static [AdapterKind] {
        match self {
            Self::Linux => &[AdapterKind::Tap, AdapterKind::Tun],
            Self::Windows => &[AdapterKind::Wintun, AdapterKind::Tap],
        }
    }

    /// The valid command-line words, for help and error messages (`"tap or tun"`).
    pub const fn valid_words(self) -> &'static str {
        match self {
            Self::Linux => "tap or tun",
            Self::Windows => "wintun or tap",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Linux => "linux",
            Self::Windows => "windows",
        })
    }
}

/// Why a command-line word is not a usable adapter kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseAdapterKindError {
    /// The word names no adapter kind.
    #[error("unknown adapter kind {word:?}; use {}", platform.valid_words())]
    Unknown {
        /// What was given (at most 32 characters of it).
        word: String,
        /// The platform the word was parsed for.
        platform: Platform,
    },
    /// The kind exists, but not on this platform.
    #[error("adapter kind {kind} is not available on {platform}; use {}", platform.valid_words())]
    Unavailable {
        /// The kind named.
        kind: AdapterKind,
        /// The platform the word was parsed for.
        platform: Platform,
    },
}

/// Something the client's loop can block on until an adapter may have data to read.
///
/// It borrows the operating-system object from the adapter that returned it (a file descriptor
/// on Linux, an event `HANDLE` on Windows) and is only valid while that adapter lives; it is a
/// plain value, like a `RawFd`, and closes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WaitHandle(WaitInner);

#[cfg(unix)]
type WaitInner = std::os::fd::RawFd;
// A HANDLE is an opaque kernel value, not memory; keeping it as an integer keeps the wrapper
// `Send` and `Sync`.
#[cfg(windows)]
type WaitInner = usize;

#[cfg(unix)]
impl WaitHandle {
    /// Wraps a file descriptor that becomes readable when the adapter has data.
    pub const fn from_raw_fd(fd: std::os::fd::RawFd) -> Self {
        Self(fd)
    }

    /// The file descriptor to poll for readability.
    pub const fn raw_fd(self) -> std::os::fd::RawFd {
        self.0
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for WaitHandle {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

#[cfg(windows)]
impl WaitHandle {
    /// Wraps an event handle that is signalled when the adapter may have data.
    pub fn from_raw_handle(handle: std::os::windows::io::RawHandle) -> Self {
        Self(handle as usize)
    }

    /// The event handle to pass to `WaitForMultipleObjects`.
    pub fn raw_handle(self) -> std::os::windows::io::RawHandle {
        self.0 as std::os::windows::io::RawHandle
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsRawHandle for WaitHandle {
    fn as_raw_handle(&self) -> std::os::windows::io::RawHandle {
        self.raw_handle()
    }
}

/// Blocks until one of `handles` is signalled (its index) or `timeout` passes (`None`);
/// `timeout` `None` waits forever. Timeouts are rounded up to whole milliseconds.
///
/// A socket joins the wait through an event from `WSAEventSelect`, wrapped with
/// [`WaitHandle::from_raw_handle`].
///
/// # Errors
///
/// `InvalidInput` for no handles or more than 64 (`MAXIMUM_WAIT_OBJECTS`); the Win32 error of
/// `WaitForMultipleObjects` otherwise.
#[cfg(windows)]
pub fn wait_any(
    handles: &[WaitHandle],
    timeout: Option<std::time::Duration>,
) -> io::Result<Option<usize>> {
    crate::sys::wait::wait_any(handles, timeout)
}

/// An open virtual adapter, as the client's datapath loop uses it.
///
/// The loop's contract: call [`read`](Self::read) until it returns `Ok(None)`, then block on
/// [`wait_handle`](Self::wait_handle) (with the loop's other sources and a timeout), and read
/// again when it fires. Backends arm their wake-up only when a read finds nothing, so waiting
/// before a read has returned `Ok(None)` may sleep while data is waiting.
pub trait VirtualAdapter {
    /// What this adapter carries.
    fn kind(&self) -> AdapterKind;

    /// The adapter's interface name as the operating system shows it.
    fn name(&self) -> &str;

    /// The IP MTU of the adapter when it was opened (frames carry up to 14 more bytes of
    /// Ethernet header on L2 kinds).
    fn mtu(&self) -> u32;

    /// The adapter's own hardware address on L2 kinds; `None` on L3 kinds, where the client
    /// chooses the MAC it emulates.
    fn mac(&self) -> Option<Mac>;

    /// Reads one frame (L2 kinds) or packet (L3 kinds) into `buf` without blocking. `None`
    /// means nothing is waiting. A frame longer than `buf` is truncated to it.
    ///
    /// # Errors
    ///
    /// The operating system's error other than "nothing to read".
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;

    /// Writes one frame (L2 kinds) or packet (L3 kinds) without blocking.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::WouldBlock`] when the adapter's queue is full (the caller drops the
    /// frame and counts it), [`io::ErrorKind::InvalidInput`] for an empty or oversized
    /// frame, or the operating system's error.
    fn write(&mut self, data: &[u8]) -> io::Result<()>;

    /// What to block on until [`read`](Self::read) may make progress.
    fn wait_handle(&self) -> WaitHandle;
}

/// Errors from opening an adapter. The messages tell the player what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// `wintun.dll` could not be loaded.
    #[error(
        "wintun.dll could not be loaded ({reason}); download wintun from https://www.wintun.net \
         and put bin\\amd64\\wintun.dll (arm64 on ARM PCs) next to lanparty-client.exe, or use \
         --adapter tap with the tap-windows6 driver"
    )]
    WintunDllMissing {
        /// What the loader said for each place tried.
        reason: String,
    },
    /// The wintun adapter could be neither opened nor created.
    #[error(
        "could not create the wintun adapter {name:?}: {source}; run lanparty-client as \
         administrator"
    )]
    WintunCreate {
        /// The adapter name.
        name: String,
        /// The error from wintun.
        #[source]
        source: io::Error,
    },
    /// No TAP adapter exists (driver not installed, or no adapter created).
    #[error(
        "no tap-windows6 adapter found{}; install the TAP driver (OpenVPN's tap-windows6 \
         installer, or OpenVPN with \"TAP Virtual Ethernet Adapter\"), then create an adapter \
         from an administrator prompt with: tapctl create --hwid root\\tap0901",
        name.as_ref().map(|name| format!(" named {name:?}")).unwrap_or_default()
    )]
    TapNotFound {
        /// The adapter name asked for, if any.
        name: Option<String>,
    },
    /// Every TAP adapter found is open in another program.
    #[error(
        "every TAP adapter is in use by another program ({names}); close it (OpenVPN?) or \
         create another adapter with: tapctl create --hwid root\\tap0901"
    )]
    TapInUse {
        /// The adapters tried, comma separated.
        names: String,
    },
    /// A system call failed while opening or configuring the adapter.
    #[error("{op} failed on adapter {name:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The adapter name (or GUID when the name is not known yet).
        name: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tap_carries_ethernet() {
        assert!(AdapterKind::Tap.carries_ethernet());
        assert!(!AdapterKind::Tun.carries_ethernet());
        assert!(!AdapterKind::Wintun.carries_ethernet());
    }

    #[test]
    fn linux_accepts_tap_and_tun() {
        assert_eq!(
            AdapterKind::parse_for("tap", Platform::Linux),
            Ok(AdapterKind::Tap)
        );
        assert_eq!(
            AdapterKind::parse_for("tun", Platform::Linux),
            Ok(AdapterKind::Tun)
        );
    }

    #[test]
    fn windows_accepts_tap_and_wintun() {
        assert_eq!(
            AdapterKind::parse_for("tap", Platform::Windows),
            Ok(AdapterKind::Tap)
        );
        assert_eq!(
            AdapterKind::parse_for("wintun", Platform::Windows),
            Ok(AdapterKind::Wintun)
        );
    }

    #[test]
    fn words_are_case_insensitive_and_trimmed() {
        assert_eq!(
            AdapterKind::parse_for(" TAP ", Platform::Linux),
            Ok(AdapterKind::Tap)
        );
        assert_eq!(
            AdapterKind::parse_for("WinTun", Platform::Windows),
            Ok(AdapterKind::Wintun)
        );
    }

    #[test]
    fn wintun_is_refused_on_linux_and_tun_on_windows() {
        let err = AdapterKind::parse_for("wintun", Platform::Linux).unwrap_err();
        assert_eq!(
            err,
            ParseAdapterKindError::Unavailable {
                kind: AdapterKind::Wintun,
                platform: Platform::Linux
            }
        );
        assert_eq!(
            err.to_string(),
            "adapter kind wintun is not available on linux; use tap or tun"
        );
        let err = AdapterKind::parse_for("tun", Platform::Windows).unwrap_err();
        assert_eq!(
            err.to_string(),
            "adapter kind tun is not available on windows; use wintun or tap"
        );
    }

    #[test]
    fn unknown_words_are_refused_with_the_valid_ones() {
        let err = AdapterKind::parse_for("tap0901", Platform::Windows).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown adapter kind \"tap0901\"; use wintun or tap"
        );
        assert!(AdapterKind::parse_for("", Platform::Linux).is_err());
    }

    #[test]
    fn an_overlong_word_is_cut_in_the_error() {
        let word = "x".repeat(10_000);
        let Err(ParseAdapterKindError::Unknown { word: kept, .. }) =
            AdapterKind::parse_for(&word, Platform::Linux)
        else {
            panic!("an unknown word must be refused");
        };
        assert_eq!(kept.len(), 32);
    }

    #[test]
    fn defaults_are_tap_on_linux_and_wintun_on_windows() {
        assert_eq!(AdapterKind::default_for(Platform::Linux), AdapterKind::Tap);
        assert_eq!(
            AdapterKind::default_for(Platform::Windows),
            AdapterKind::Wintun
        );
        for platform in [Platform::Linux, Platform::Windows] {
            let default = AdapterKind::default_for(platform);
            assert!(default.is_available_on(platform));
            assert_eq!(
                platform.kinds()[0],
                default,
                "kinds() lists the default first"
            );
        }
    }

    #[test]
    fn every_word_round_trips_on_its_platforms() {
        for platform in [Platform::Linux, Platform::Windows] {
            for &kind in platform.kinds() {
                assert_eq!(
                    AdapterKind::parse_for(&kind.to_string(), platform),
                    Ok(kind)
                );
                assert!(platform.valid_words().contains(kind.word()));
            }
        }
    }

    #[test]
    fn from_str_and_default_follow_the_build_platform() {
        assert_eq!(
            AdapterKind::default(),
            AdapterKind::default_for(Platform::CURRENT)
        );
        assert_eq!("tap".parse::<AdapterKind>(), Ok(AdapterKind::Tap));
        #[cfg(not(windows))]
        assert!("wintun".parse::<AdapterKind>().is_err());
    }

    #[test]
    fn driver_errors_tell_the_player_what_to_install() {
        let wintun = AdapterError::WintunDllMissing {
            reason: "not found".into(),
        };
        let text = wintun.to_string();
        assert!(text.contains("wintun.net") && text.contains("next to lanparty-client.exe"));
        let tap = AdapterError::TapNotFound { name: None }.to_string();
        assert!(tap.contains("tapctl create --hwid root\\tap0901"), "{tap}");
        let named = AdapterError::TapNotFound {
            name: Some("LAN".into()),
        }
        .to_string();
        assert!(
            named.starts_with("no tap-windows6 adapter found named \"LAN\";"),
            "{named}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn wait_handle_keeps_the_descriptor() {
        use std::os::fd::AsRawFd;
        let handle = WaitHandle::from_raw_fd(7);
        assert_eq!(handle.raw_fd(), 7);
        assert_eq!(handle.as_raw_fd(), 7);
    }
}
