//! tap-windows6: the TAP driver that OpenVPN ships, a true Ethernet (L2) adapter on Windows.
//!
//! How the adapter is found and driven (the same way OpenVPN does it):
//!
//! 1. Every network adapter has a subkey under [`ADAPTER_CLASS_KEY`]
//!    (`HKLM\SYSTEM\CurrentControlSet\Control\Class\{4d36e972-…}`); TAP adapters have
//!    `ComponentId` `tap0901` (or `root\tap0901` when created with `tapctl`), and their
//!    `NetCfgInstanceId` is the adapter GUID.
//! 2. The device is `\\.\Global\{GUID}.tap` ([`device_path`]), opened with `CreateFileW` for
//!    overlapped I/O. The driver lets one program open it at a time.
//! 3. [`IOCTL_SET_MEDIA_STATUS`] with 1 "plugs the cable in"; [`IOCTL_GET_MAC`] and
//!    [`IOCTL_GET_MTU`] read the adapter's MAC and MTU.
//! 4. Each `ReadFile` returns one whole Ethernet frame sent by Windows; each `WriteFile` hands
//!    one frame to Windows as received. One read is kept in flight; its event is the
//!    [`WaitHandle`](super::WaitHandle). Writes use a small pool of in-flight slots; when all
//!    are busy, `write` says `WouldBlock` and the loop drops the frame.
//!
//! Installing the driver: see the [module documentation](super).

use std::fmt::Write as _;

/// The registry key (under `HKEY_LOCAL_MACHINE`) whose subkeys describe network adapters: the
/// network adapter device class `{4d36e972-e325-11ce-bfc1-08002be10318}`.
pub const ADAPTER_CLASS_KEY: &str =
    r"SYSTEM\CurrentControlSet\Control\Class\{4d36e972-e325-11ce-bfc1-08002be10318}";

/// The component id of tap-windows6 adapters.
pub const COMPONENT_ID: &str = "tap0901";

/// `FILE_DEVICE_UNKNOWN`, the device type of the TAP ioctls.
const FILE_DEVICE_UNKNOWN: u32 = 0x22;
/// `METHOD_BUFFERED`.
const METHOD_BUFFERED: u32 = 0;
/// `FILE_ANY_ACCESS`.
const FILE_ANY_ACCESS: u32 = 0;

/// `CTL_CODE(device_type, function, method, access)` from `winioctl.h`.
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// `TAP_WIN_CONTROL_CODE(request, METHOD_BUFFERED)` from tap-windows6's `tap-windows.h`.
pub const fn tap_control_code(request: u32) -> u32 {
    ctl_code(
        FILE_DEVICE_UNKNOWN,
        request,
        METHOD_BUFFERED,
        FILE_ANY_ACCESS,
    )
}

/// `TAP_WIN_IOCTL_GET_MAC`: returns the adapter's 6-byte MAC.
pub const IOCTL_GET_MAC: u32 = tap_control_code(1);
/// `TAP_WIN_IOCTL_GET_VERSION`: returns three `ULONG`s (major, minor, debug).
pub const IOCTL_GET_VERSION: u32 = tap_control_code(2);
/// `TAP_WIN_IOCTL_GET_MTU`: returns the MTU as a `ULONG`.
pub const IOCTL_GET_MTU: u32 = tap_control_code(3);
/// `TAP_WIN_IOCTL_SET_MEDIA_STATUS`: takes a `ULONG`, 1 for connected.
pub const IOCTL_SET_MEDIA_STATUS: u32 = tap_control_code(6);

/// Whether a `ComponentId` registry value names a tap-windows6 adapter: `tap0901`, or
/// `root\tap0901` for adapters created with `tapctl create --hwid root\tap0901`
/// (case-insensitive, as Windows compares hardware ids).
pub fn is_tap_component_id(component_id: &str) -> bool {
    let id = component_id.trim_end_matches('\0');
    let id = match id.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case(r"root\") => &id[5..],
        _ => id,
    };
    id.eq_ignore_ascii_case(COMPONENT_ID)
}

/// Parses a registry GUID string (`{0123abcd-…}`, braces optional) into the `u128` whose
/// big-endian hex digits are the GUID's text, the form `GUID::from_u128` takes.
pub fn parse_guid(text: &str) -> Option<u128> {
    let text = text.trim_end_matches('\0');
    let inner = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let groups: Vec<&str> = inner.split('-').collect();
    let lengths = [8, 4, 4, 4, 12];
    if groups.len() != lengths.len()
        || groups
            .iter()
            .zip(lengths)
            .any(|(group, len)| group.len() != len || !group.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    u128::from_str_radix(&groups.concat(), 16).ok()
}

/// Formats a GUID as the registry writes it: `{0123ABCD-0123-0123-0123-0123456789AB}`.
pub fn format_guid(guid: u128) -> String {
    let hex = format!("{guid:032X}");
    let mut text = String::with_capacity(38);
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "{{{}-{}-{}-{}-{}}}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    text
}

/// The device path of the TAP adapter with instance id `guid` (`{…}` as in the registry).
pub fn device_path(guid: &str) -> String {
    format!(r"\\.\Global\{guid}.tap")
}

/// A TAP adapter found in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapInfo {
    /// `NetCfgInstanceId`, the adapter GUID in braces.
    pub guid: String,
    /// The name shown in the network connections, when Windows knows it.
    pub name: Option<String>,
}

#[cfg(windows)]
pub use self::windows::{TapAdapter, TapConfig, find_tap_adapters};

#[cfg(windows)]
mod windows {
    use std::io;

    use lanparty_datapath::Mac;

    use super::{
        ADAPTER_CLASS_KEY, IOCTL_GET_MAC, IOCTL_GET_MTU, IOCTL_SET_MEDIA_STATUS, TapInfo,
        device_path, is_tap_component_id, parse_guid,
    };
    use crate::adapter::{AdapterError, AdapterKind, VirtualAdapter, WaitHandle};
    use crate::sys::iphelper;
    use crate::sys::overlapped::OverlappedDevice;
    use crate::sys::registry::RegKey;

    /// Frames the driver may have in flight from us before `write` says `WouldBlock`.
    const WRITE_SLOTS: usize = 32;
    /// Ethernet header plus an 802.1Q tag, added to the MTU to size the frame buffers.
    const FRAME_OVERHEAD: u32 = 18;
    /// The read buffer: the largest frame tap-windows6 hands out (its MTU is capped well
    /// below this).
    const READ_BUFFER: usize = 65_536;

    // Win32 codes from `CreateFileW` that mean "another program has the adapter open".
    const ERROR_ACCESS_DENIED: i32 = 5;
    const ERROR_GEN_FAILURE: i32 = 31;
    const ERROR_SHARING_VIOLATION: i32 = 32;
    const ERROR_BUSY: i32 = 170;
    // And those that mean "no such device" (a disabled adapter).
    const ERROR_FILE_NOT_FOUND: i32 = 2;
    const ERROR_PATH_NOT_FOUND: i32 = 3;

    /// Which TAP adapter to open.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct TapConfig {
        /// The adapter's name in the network connections (ASCII case-insensitive); `None` takes
        /// the first TAP adapter no other program has open.
        pub name: Option<String>,
    }

    /// The TAP adapters in the registry, in registry order.
    ///
    /// # Errors
    ///
    /// Opening the adapter class key failed (it exists on every Windows; access to it does
    /// not need administrator rights). Unreadable subkeys are skipped.
    pub fn find_tap_adapters() -> io::Result<Vec<TapInfo>> {
        let class = RegKey::open_local_machine(ADAPTER_CLASS_KEY)?;
        let mut found = Vec::new();
        for subkey in class.subkey_names()? {
            // "Properties" and adapters of other users deny access; they are not TAP adapters.
            let Ok(key) = class.open_subkey(&subkey) else {
                continue;
            };
            let Ok(Some(component)) = key.string_value("ComponentId") else {
                continue;
            };
            if !is_tap_component_id(&component) {
                continue;
            }
            let Ok(Some(guid)) = key.string_value("NetCfgInstanceId") else {
                continue;
            };
            let name = parse_guid(&guid)
                .and_then(|value| iphelper::guid_to_luid(value).ok())
                .and_then(|luid| iphelper::interface_alias(luid).ok());
            found.push(TapInfo { guid, name });
        }
        Ok(found)
    }

    /// An open tap-windows6 adapter with its cable plugged in.
    #[derive(Debug)]
    pub struct TapAdapter {
        device: OverlappedDevice,
        name: String,
        guid: String,
        luid: u64,
        index: u32,
        mac: Mac,
        mtu: u32,
    }

    impl TapAdapter {
        /// Finds and opens a TAP adapter and sets its media status to connected.
        ///
        /// # Errors
        ///
        /// [`AdapterError::TapNotFound`] when no (matching) adapter exists,
        /// [`AdapterError::TapInUse`] when every one is open elsewhere, [`AdapterError::Io`]
        /// for a failed registry read, open or ioctl.
        pub fn open(config: &TapConfig) -> Result<Self, AdapterError> {
            let adapters = find_tap_adapters().map_err(|source| AdapterError::Io {
                op: "reading the network adapter registry key",
                name: "tap".into(),
                source,
            })?;
            let candidates: Vec<TapInfo> = adapters
                .into_iter()
                .filter(|info| match (&config.name, &info.name) {
                    (None, _) => true,
                    (Some(wanted), Some(name)) => wanted.eq_ignore_ascii_case(name),
                    (Some(wanted), None) => wanted.eq_ignore_ascii_case(&info.guid),
                })
                .collect();
            let mut in_use = Vec::new();
            let mut other_error = None;
            for info in candidates {
                let label = info.name.clone().unwrap_or_else(|| info.guid.clone());
                match OverlappedDevice::open(&device_path(&info.guid), READ_BUFFER) {
                    Ok(device) => return Self::configure(device, info, label),
                    Err(err) => match err.raw_os_error() {
                        Some(ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND) => {}
                        Some(
                            ERROR_ACCESS_DENIED
                            | ERROR_GEN_FAILURE
                            | ERROR_SHARING_VIOLATION
                            | ERROR_BUSY,
                        ) => in_use.push(label),
                        _ => {
                            other_error = Some(AdapterError::Io {
                                op: "opening the TAP device",
                                name: label,
                                source: err,
                            });
                        }
                    },
                }
            }
            if let Some(err) = other_error {
                return Err(err);
            }
            if in_use.is_empty() {
                Err(AdapterError::TapNotFound {
                    name: config.name.clone(),
                })
            } else {
                Err(AdapterError::TapInUse {
                    names: in_use.join(", "),
                })
            }
        }

        fn configure(
            mut device: OverlappedDevice,
            info: TapInfo,
            name: String,
        ) -> Result<Self, AdapterError> {
            let io_error = |op: &'static str, name: &str| {
                let name = name.to_owned();
                move |source| AdapterError::Io { op, name, source }
            };
            let mut mac = [0_u8; 6];
            let got = device
                .ioctl(IOCTL_GET_MAC, &[], &mut mac)
                .map_err(io_error("reading the TAP adapter's MAC", &name))?;
            if got < mac.len() {
                return Err(AdapterError::Io {
                    op: "reading the TAP adapter's MAC",
                    name,
                    source: io::Error::new(io::ErrorKind::InvalidData, "short MAC from driver"),
                });
            }
            let mut mtu = [0_u8; 4];
            let mtu = match device.ioctl(IOCTL_GET_MTU, &[], &mut mtu) {
                Ok(4) => u32::from_le_bytes(mtu),
                // Old drivers lack the ioctl; 1500 is tap-windows6's default.
                _ => 1500,
            };
            let connected = 1_u32.to_le_bytes();
            device
                .ioctl(IOCTL_SET_MEDIA_STATUS, &connected, &mut [])
                .map_err(io_error("setting the TAP adapter's media status", &name))?;
            device
                .set_write_slots(WRITE_SLOTS, (mtu + FRAME_OVERHEAD) as usize)
                .map_err(io_error("allocating TAP write buffers", &name))?;
            let luid = parse_guid(&info.guid)
                .ok_or_else(|| AdapterError::Io {
                    op: "parsing the TAP adapter's GUID",
                    name: name.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, info.guid.clone()),
                })
                .and_then(|guid| {
                    iphelper::guid_to_luid(guid).map_err(|err| AdapterError::Io {
                        op: "looking up the TAP adapter's LUID",
                        name: name.clone(),
                        source: err.into(),
                    })
                })?;
            let index = iphelper::luid_to_index(luid).map_err(|err| AdapterError::Io {
                op: "looking up the TAP adapter's interface index",
                name: name.clone(),
                source: err.into(),
            })?;
            Ok(Self {
                device,
                name,
                guid: info.guid,
                luid,
                index,
                mac: Mac(mac),
                mtu,
            })
        }

        /// The adapter GUID (`NetCfgInstanceId`, in braces).
        pub fn guid(&self) -> &str {
            &self.guid
        }

        /// The interface LUID (`NET_LUID.Value`), for [`super::super::iphelper`].
        pub fn luid(&self) -> u64 {
            self.luid
        }

        /// The interface index.
        pub fn index(&self) -> u32 {
            self.index
        }

        /// Writes that the driver completed with an error after `write` had returned (they
        /// are not reported one by one).
        pub fn failed_writes(&self) -> u64 {
            self.device.failed_writes()
        }
    }

    impl VirtualAdapter for TapAdapter {
        fn kind(&self) -> AdapterKind {
            AdapterKind::Tap
        }

        fn name(&self) -> &str {
            &self.name
        }

        fn mtu(&self) -> u32 {
            self.mtu
        }

        fn mac(&self) -> Option<Mac> {
            Some(self.mac)
        }

        fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
            self.device.read(buf)
        }

        fn write(&mut self, data: &[u8]) -> io::Result<()> {
            self.device.write(data)
        }

        fn wait_handle(&self) -> WaitHandle {
            WaitHandle::from_raw_handle(self.device.read_event())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn tap_adapter_can_move_to_the_datapath_thread() {
            fn is_send<T: Send>() {}
            is_send::<TapAdapter>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_codes_match_tap_windows_h() {
        // CTL_CODE(FILE_DEVICE_UNKNOWN, n, METHOD_BUFFERED, FILE_ANY_ACCESS) = 0x22_0000 | n << 2.
        assert_eq!(IOCTL_GET_MAC, 0x0022_0004);
        assert_eq!(IOCTL_GET_VERSION, 0x0022_0008);
        assert_eq!(IOCTL_GET_MTU, 0x0022_000c);
        assert_eq!(IOCTL_SET_MEDIA_STATUS, 0x0022_0018);
        // A code with every field set, to check each lands in its own bits.
        assert_eq!(ctl_code(0x1, 0x2, 0x3, 0x1), 0x0001_4000 | 0x8 | 0x3);
    }

    #[test]
    fn tap_component_ids_are_recognised() {
        assert!(is_tap_component_id("tap0901"));
        assert!(is_tap_component_id("TAP0901"));
        assert!(is_tap_component_id(r"root\tap0901"));
        assert!(is_tap_component_id("root\\tap0901\0"));
        assert!(!is_tap_component_id("wintun"));
        assert!(!is_tap_component_id("ovpn-dco"));
        assert!(!is_tap_component_id(r"root\tap0901x"));
        assert!(!is_tap_component_id(r"pci\ven_8086"));
        assert!(!is_tap_component_id(""));
    }

    #[test]
    fn guids_parse_from_registry_text() {
        let text = "{0123ABCD-4567-89ef-0123-456789ABCDEF}";
        assert_eq!(
            parse_guid(text),
            Some(0x0123abcd_4567_89ef_0123_456789abcdef)
        );
        assert_eq!(
            parse_guid("0123abcd-4567-89ef-0123-456789abcdef"),
            parse_guid(text)
        );
        assert_eq!(
            format_guid(0x0123abcd_4567_89ef_0123_456789abcdef),
            text.to_uppercase()
        );
    }

    #[test]
    fn malformed_guids_are_refused() {
        for bad in [
            "",
            "{}",
            "{0123ABCD-4567-89EF-0123-456789ABCDE}",
            "{0123ABCD-4567-89EF-0123456789ABCDEF}",
            "{0123ABCD-4567-89EF-0123-456789ABCDEG}",
            "{+123ABCD-4567-89EF-0123-456789ABCDEF}",
            "{0123ABCD-4567-89EF-0123-456789ABCDEF",
        ] {
            assert_eq!(parse_guid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn device_path_is_the_global_tap_name() {
        assert_eq!(
            device_path("{0123ABCD-4567-89EF-0123-456789ABCDEF}"),
            r"\\.\Global\{0123ABCD-4567-89EF-0123-456789ABCDEF}.tap"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_guid_round_trips_through_text(guid: u128) {
            proptest::prop_assert_eq!(parse_guid(&format_guid(guid)), Some(guid));
        }

        #[test]
        fn parse_guid_never_panics(text in ".{0,48}") {
            let _ = parse_guid(&text);
        }
    }
}
