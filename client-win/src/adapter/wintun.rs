//! wintun: WireGuard's L3 (IP packet) adapter for Windows, the default on Windows.
//!
//! `wintun.dll` carries the signed driver and installs it on first use, so a player only copies
//! the DLL next to `lanparty-client.exe` (see the [module documentation](super)). The DLL is
//! looked for in [`dll_candidates`] order: next to the executable first, so a stray copy in the
//! current directory is not picked up before ours, then the system's search path.
//!
//! The adapter is opened if it exists and created otherwise (creating needs administrator
//! rights), always with the same GUID ([`DEFAULT_GUID`]) so Windows keeps one network profile
//! (and its firewall category) for it across runs instead of adding "softlan 2", "softlan 3".
//! Wintun removes an adapter it created when the process closes it.
//!
//! Packets move through a session's shared-memory rings of [`RING_CAPACITY`] bytes:
//! `try_receive` and `allocate_send_packet`/`send_packet` never block; the session's read-wait
//! event is the [`WaitHandle`](super::WaitHandle).

use std::path::{Path, PathBuf};

/// The adapter name shown in the network connections.
pub const DEFAULT_NAME: &str = "softlan";

/// The tunnel type wintun records for the adapter (shown as its description).
pub const TUNNEL_TYPE: &str = "softlan";

/// The GUID given to the adapter named [`DEFAULT_NAME`]; fixed so that Windows recognises the
/// same network on every run.
pub const DEFAULT_GUID: u128 = 0x5f1a_c7e2_6b0d_4c39_9a41_2e7d_0b5c_8f13;

/// Size of each of the session's two rings: 4 MiB, about 2,800 full-size packets, enough to
/// ride out a scheduling hiccup of the client's loop at gigabit rates. Wintun wants a power of
/// two between 128 KiB and 64 MiB.
pub const RING_CAPACITY: u32 = 0x40_0000;

/// The DLL's file name.
pub const DLL_NAME: &str = "wintun.dll";

/// Where to look for `wintun.dll`, in order: `explicit` (from the configuration) if given, the
/// directory of the executable, then the bare name for the system's DLL search path.
pub fn dll_candidates(explicit: Option<&Path>, exe_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = Vec::with_capacity(3);
    paths.extend(explicit.map(Path::to_path_buf));
    paths.extend(exe_dir.map(|dir| dir.join(DLL_NAME)));
    paths.push(PathBuf::from(DLL_NAME));
    paths
}

#[cfg(windows)]
pub use self::windows::{WintunAdapter, WintunConfig};

#[cfg(windows)]
mod windows {
    use std::io;
    use std::path::PathBuf;
    use std::sync::Arc;

    use lanparty_datapath::Mac;

    use super::{DEFAULT_GUID, DEFAULT_NAME, RING_CAPACITY, TUNNEL_TYPE, dll_candidates};
    use crate::adapter::{AdapterError, AdapterKind, VirtualAdapter, WaitHandle};
    use crate::sys::wintun as sys;

    /// `ERROR_BUFFER_OVERFLOW`: the send ring is full.
    const ERROR_BUFFER_OVERFLOW: i32 = 111;

    /// How to open the wintun adapter.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct WintunConfig {
        /// The adapter name.
        pub name: String,
        /// The adapter GUID when it has to be created.
        pub guid: u128,
        /// Ring size in bytes (a power of two between 128 KiB and 64 MiB).
        pub ring_capacity: u32,
        /// A `wintun.dll` to try before the usual places.
        pub dll_path: Option<PathBuf>,
    }

    impl Default for WintunConfig {
        fn default() -> Self {
            Self {
                name: DEFAULT_NAME.into(),
                guid: DEFAULT_GUID,
                ring_capacity: RING_CAPACITY,
                dll_path: None,
            }
        }
    }

    /// An open wintun adapter with a running session.
    pub struct WintunAdapter {
        session: Arc<wintun::Session>,
        // Keeps the adapter open (and so in existence) while the session runs.
        _adapter: Arc<wintun::Adapter>,
        name: String,
        luid: u64,
        index: u32,
        mtu: u32,
        read_event: WaitHandle,
    }

    impl std::fmt::Debug for WintunAdapter {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("WintunAdapter")
                .field("name", &self.name)
                .field("luid", &self.luid)
                .field("index", &self.index)
                .field("mtu", &self.mtu)
                .finish_non_exhaustive()
        }
    }

    fn load_dll(config: &WintunConfig) -> Result<wintun::Wintun, AdapterError> {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(std::path::Path::to_path_buf));
        let mut reasons = Vec::new();
        for path in dll_candidates(config.dll_path.as_deref(), exe_dir.as_deref()) {
            match sys::load(&path) {
                Ok(dll) => return Ok(dll),
                Err(err) => reasons.push(format!("{}: {err}", path.display())),
            }
        }
        Err(AdapterError::WintunDllMissing {
            reason: reasons.join("; "),
        })
    }

    impl WintunAdapter {
        /// Loads `wintun.dll`, opens or creates the adapter and starts a session.
        ///
        /// # Errors
        ///
        /// [`AdapterError::WintunDllMissing`] when no `wintun.dll` loads,
        /// [`AdapterError::WintunCreate`] when the adapter can be neither opened nor created
        /// (usually missing administrator rights), [`AdapterError::Io`] when the session does
        /// not start (for example another client already runs one on this adapter).
        pub fn open(config: &WintunConfig) -> Result<Self, AdapterError> {
            let dll = load_dll(config)?;
            let adapter = match wintun::Adapter::open(&dll, &config.name) {
                Ok(adapter) => adapter,
                Err(_) => {
                    wintun::Adapter::create(&dll, &config.name, TUNNEL_TYPE, Some(config.guid))
                        .map_err(|err| AdapterError::WintunCreate {
                            name: config.name.clone(),
                            source: err.into(),
                        })?
                }
            };
            let io_error = |op: &'static str| {
                let name = config.name.clone();
                move |err: wintun::Error| AdapterError::Io {
                    op,
                    name,
                    source: err.into(),
                }
            };
            let session = Arc::new(
                adapter
                    .start_session(config.ring_capacity)
                    .map_err(io_error("starting the wintun session"))?,
            );
            let event = session
                .get_read_wait_event()
                .map_err(io_error("getting the wintun read event"))?;
            let luid = sys::luid_value(&adapter.get_luid());
            let index = adapter
                .get_adapter_index()
                .map_err(io_error("reading the interface index"))?;
            let mtu = adapter.get_mtu().map_err(io_error("reading the MTU"))?;
            let name = adapter.get_name().unwrap_or_else(|_| config.name.clone());
            Ok(Self {
                session,
                _adapter: adapter,
                name,
                luid,
                index,
                mtu: u32::try_from(mtu).unwrap_or(u32::MAX),
                read_event: sys::wait_handle(event),
            })
        }

        /// The interface LUID (`NET_LUID.Value`), for [`super::super::iphelper`].
        pub fn luid(&self) -> u64 {
            self.luid
        }

        /// The interface index.
        pub fn index(&self) -> u32 {
            self.index
        }
    }

    impl VirtualAdapter for WintunAdapter {
        fn kind(&self) -> AdapterKind {
            AdapterKind::Wintun
        }

        fn name(&self) -> &str {
            &self.name
        }

        fn mtu(&self) -> u32 {
            self.mtu
        }

        fn mac(&self) -> Option<Mac> {
            None
        }

        fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
            match self.session.try_receive() {
                Ok(Some(packet)) => {
                    let bytes = packet.bytes();
                    let len = bytes.len().min(buf.len());
                    buf[..len].copy_from_slice(&bytes[..len]);
                    Ok(Some(len))
                }
                Ok(None) => Ok(None),
                Err(err) => Err(err.into()),
            }
        }

        fn write(&mut self, data: &[u8]) -> io::Result<()> {
            let len = match u16::try_from(data.len()) {
                Ok(len) if len > 0 => len,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "wintun packets are 1 to 65535 bytes",
                    ));
                }
            };
            match self.session.allocate_send_packet(len) {
                Ok(mut packet) => {
                    packet.bytes_mut().copy_from_slice(data);
                    self.session.send_packet(packet);
                    Ok(())
                }
                Err(wintun::Error::Io(err))
                    if err.raw_os_error() == Some(ERROR_BUFFER_OVERFLOW) =>
                {
                    Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "wintun send ring is full",
                    ))
                }
                Err(err) => Err(err.into()),
            }
        }

        fn wait_handle(&self) -> WaitHandle {
            self.read_event
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn wintun_adapter_can_move_to_the_datapath_thread() {
            fn is_send<T: Send>() {}
            is_send::<WintunAdapter>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dll_is_looked_for_next_to_the_executable_before_the_search_path() {
        let exe_dir = Path::new("C:/Games/softlan");
        assert_eq!(
            dll_candidates(None, Some(exe_dir)),
            [exe_dir.join("wintun.dll"), PathBuf::from("wintun.dll")]
        );
    }

    #[test]
    fn an_explicit_dll_comes_first() {
        let explicit = Path::new("D:/drivers/wintun.dll");
        let paths = dll_candidates(Some(explicit), Some(Path::new("C:/softlan")));
        assert_eq!(paths.first().map(PathBuf::as_path), Some(explicit));
        assert_eq!(paths.len(), 3);
        assert_eq!(dll_candidates(None, None), [PathBuf::from("wintun.dll")]);
    }

    #[test]
    fn ring_capacity_is_what_wintun_accepts() {
        // WINTUN_MIN_RING_CAPACITY and WINTUN_MAX_RING_CAPACITY from wintun.h.
        assert!((0x2_0000..=0x400_0000).contains(&RING_CAPACITY));
        assert!(RING_CAPACITY.is_power_of_two());
    }

    #[test]
    fn default_guid_reads_as_a_registry_guid() {
        let text = super::super::tap::format_guid(DEFAULT_GUID);
        assert_eq!(super::super::tap::parse_guid(&text), Some(DEFAULT_GUID));
    }
}
