//! Applying interface changes through the Windows IP Helper API, one plain function per kind
//! of change.
//!
//! Each function does exactly one IP Helper call (or a read-modify-write of one interface row)
//! with explicit parameters: an interface's LUID (`u64`, `NET_LUID.Value`), addresses as
//! `std::net` types. It decides nothing: which address, metric, MTU and routes to set comes from
//! [`crate::winplan`], which maps each planned change to one call here.
//!
//! All functions work on IPv4 (`AF_INET`) rows. Errors carry the Win32 code
//! ([`IpHelperError`]); a change that is already in place shows up as
//! [`IpHelperError::is_already_exists`] and a removal of something absent as
//! [`IpHelperError::is_not_found`], so an undo can be replayed safely.
//!
//! The result types are portable so the code that maps them into a snapshot is testable on
//! any platform; the functions exist on Windows only. Changing addresses, metrics and routes
//! needs administrator rights (`ERROR_ACCESS_DENIED`, 5, otherwise).

use std::fmt;
use std::io;
use std::net::Ipv4Addr;

/// `ERROR_ACCESS_DENIED`.
const ERROR_ACCESS_DENIED: u32 = 5;
/// `ERROR_FILE_NOT_FOUND`, which some IP Helper calls return for an unknown interface.
const ERROR_FILE_NOT_FOUND: u32 = 2;
/// `ERROR_NOT_FOUND`.
const ERROR_NOT_FOUND: u32 = 1168;
/// `ERROR_OBJECT_ALREADY_EXISTS`.
const ERROR_OBJECT_ALREADY_EXISTS: u32 = 5010;

/// An IP Helper call failed: which call, and the Win32 error code it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHelperError {
    op: &'static str,
    code: u32,
}

impl IpHelperError {
    /// An error from the IP Helper function `op` with Win32 code `code`.
    pub const fn new(op: &'static str, code: u32) -> Self {
        Self { op, code }
    }

    /// The IP Helper function that failed (`"CreateUnicastIpAddressEntry"`).
    pub const fn op(&self) -> &'static str {
        self.op
    }

    /// The Win32 error code.
    pub const fn code(&self) -> u32 {
        self.code
    }

    /// The address or route being created already exists.
    pub const fn is_already_exists(&self) -> bool {
        self.code == ERROR_OBJECT_ALREADY_EXISTS
    }

    /// The interface, address or route does not exist.
    pub const fn is_not_found(&self) -> bool {
        matches!(self.code, ERROR_NOT_FOUND | ERROR_FILE_NOT_FOUND)
    }

    /// The process lacks administrator rights.
    pub const fn is_access_denied(&self) -> bool {
        self.code == ERROR_ACCESS_DENIED
    }
}

impl fmt::Display for IpHelperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed with win32 error {}", self.op, self.code)?;
        match self.code {
            ERROR_ACCESS_DENIED => f.write_str(" (access denied: run as administrator)"),
            ERROR_NOT_FOUND | ERROR_FILE_NOT_FOUND => f.write_str(" (not found)"),
            ERROR_OBJECT_ALREADY_EXISTS => f.write_str(" (already exists)"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for IpHelperError {}

impl From<IpHelperError> for io::Error {
    /// An `io::Error` whose `raw_os_error` is the Win32 code (on Windows that also gives the
    /// system's message for it).
    fn from(err: IpHelperError) -> Self {
        // Win32 codes fit in an i32 (they are below 0x1_0000); a larger value would be a bug in
        // the caller and keeps its bits.
        Self::from_raw_os_error(err.code as i32)
    }
}

/// One row of the IPv4 interface table (`MIB_IPINTERFACE_ROW`), the fields the planner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpInterface {
    /// `InterfaceLuid.Value`.
    pub luid: u64,
    /// `InterfaceIndex`.
    pub index: u32,
    /// `Metric`: the interface metric (the route metric is added to it).
    pub metric: u32,
    /// `UseAutomaticMetric`: Windows picks the metric from the link speed.
    pub automatic_metric: bool,
    /// `NlMtu`: the IPv4 MTU.
    pub mtu: u32,
    /// `Connected`: the link is up.
    pub connected: bool,
}

/// One IPv4 unicast address on an interface (`MIB_UNICASTIPADDRESS_ROW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnicastAddress {
    /// The interface's LUID.
    pub luid: u64,
    /// The interface's index.
    pub index: u32,
    /// The address.
    pub address: Ipv4Addr,
    /// `OnLinkPrefixLength`.
    pub prefix: u8,
}

/// One IPv4 route (`MIB_IPFORWARD_ROW2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteEntry {
    /// The interface's LUID.
    pub luid: u64,
    /// The interface's index.
    pub index: u32,
    /// `DestinationPrefix` address.
    pub destination: Ipv4Addr,
    /// `DestinationPrefix` length.
    pub prefix: u8,
    /// `NextHop`; `0.0.0.0` for an on-link route.
    pub next_hop: Ipv4Addr,
    /// `Metric`: the route metric, added to the interface metric.
    pub metric: u32,
}

#[cfg(windows)]
pub use self::windows::*;

#[cfg(windows)]
mod windows {
    use std::net::Ipv4Addr;

    use super::{IpHelperError, IpInterface, RouteEntry, UnicastAddress};
    use crate::sys::iphelper as sys;

    /// The index of the interface with LUID `luid` (`ConvertInterfaceLuidToIndex`).
    ///
    /// # Errors
    ///
    /// The Win32 code, for example not found for an unknown LUID.
    pub fn luid_to_index(luid: u64) -> Result<u32, IpHelperError> {
        sys::luid_to_index(luid)
    }

    /// The LUID of the interface with index `index` (`ConvertInterfaceIndexToLuid`).
    ///
    /// # Errors
    ///
    /// The Win32 code.
    pub fn index_to_luid(index: u32) -> Result<u64, IpHelperError> {
        sys::index_to_luid(index)
    }

    /// The interface's alias, the name shown in the network connections
    /// (`ConvertInterfaceLuidToAlias`).
    ///
    /// # Errors
    ///
    /// The Win32 code.
    pub fn interface_alias(luid: u64) -> Result<String, IpHelperError> {
        sys::interface_alias(luid)
    }

    /// Adds `address/prefix` to the interface (`CreateUnicastIpAddressEntry`), valid forever,
    /// skipping duplicate address detection's wait (`DadState` preferred).
    ///
    /// # Errors
    ///
    /// The Win32 code; [`IpHelperError::is_already_exists`] when the address is already there.
    pub fn add_ipv4_address(luid: u64, address: Ipv4Addr, prefix: u8) -> Result<(), IpHelperError> {
        sys::add_ipv4_address(luid, address, prefix)
    }

    /// Removes `address` from the interface (`DeleteUnicastIpAddressEntry`). The prefix is
    /// not part of the key but is passed for symmetry with [`add_ipv4_address`].
    ///
    /// # Errors
    ///
    /// The Win32 code; [`IpHelperError::is_not_found`] when the address is not there.
    pub fn remove_ipv4_address(
        luid: u64,
        address: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), IpHelperError> {
        sys::remove_ipv4_address(luid, address, prefix)
    }

    /// Every IPv4 unicast address on every interface (`GetUnicastIpAddressTable`).
    ///
    /// # Errors
    ///
    /// The Win32 code.
    pub fn ipv4_addresses() -> Result<Vec<UnicastAddress>, IpHelperError> {
        sys::ipv4_addresses()
    }

    /// The IPv4 row of one interface (`GetIpInterfaceEntry`).
    ///
    /// # Errors
    ///
    /// The Win32 code; not found when the interface has no IPv4 row.
    pub fn ipv4_interface(luid: u64) -> Result<IpInterface, IpHelperError> {
        sys::ipv4_interface(luid)
    }

    /// Every interface's IPv4 row: metric, automatic-metric flag, MTU, link state
    /// (`GetIpInterfaceTable`).
    ///
    /// # Errors
    ///
    /// The Win32 code.
    pub fn ipv4_interfaces() -> Result<Vec<IpInterface>, IpHelperError> {
        sys::ipv4_interfaces()
    }

    /// Sets the interface's IPv4 metric and automatic-metric flag (`GetIpInterfaceEntry`, then
    /// `SetIpInterfaceEntry`). With `automatic` true Windows ignores `metric` and picks one
    /// from the link speed.
    ///
    /// # Errors
    ///
    /// The Win32 code of either call.
    pub fn set_ipv4_metric(luid: u64, automatic: bool, metric: u32) -> Result<(), IpHelperError> {
        sys::set_ipv4_metric(luid, automatic, metric)
    }

    /// Sets the interface's IPv4 MTU (`NlMtu`, through `SetIpInterfaceEntry`). It does not
    /// persist across reboots.
    ///
    /// # Errors
    ///
    /// The Win32 code of either call (invalid parameter for an MTU below 576).
    pub fn set_ipv4_mtu(luid: u64, mtu: u32) -> Result<(), IpHelperError> {
        sys::set_ipv4_mtu(luid, mtu)
    }

    /// Adds the route `destination/prefix` via `next_hop` (`0.0.0.0` for on-link) on the
    /// interface with route metric `metric` (`CreateIpForwardEntry2`; not persistent).
    ///
    /// # Errors
    ///
    /// The Win32 code; [`IpHelperError::is_already_exists`] when the route is there.
    pub fn add_ipv4_route(
        luid: u64,
        destination: Ipv4Addr,
        prefix: u8,
        next_hop: Ipv4Addr,
        metric: u32,
    ) -> Result<(), IpHelperError> {
        sys::add_ipv4_route(luid, destination, prefix, next_hop, metric)
    }

    /// Removes the route `destination/prefix` via `next_hop` on the interface
    /// (`DeleteIpForwardEntry2`).
    ///
    /// # Errors
    ///
    /// The Win32 code; [`IpHelperError::is_not_found`] when the route is not there.
    pub fn remove_ipv4_route(
        luid: u64,
        destination: Ipv4Addr,
        prefix: u8,
        next_hop: Ipv4Addr,
    ) -> Result<(), IpHelperError> {
        sys::remove_ipv4_route(luid, destination, prefix, next_hop)
    }

    /// Every IPv4 route (`GetIpForwardTable2`).
    ///
    /// # Errors
    ///
    /// The Win32 code.
    pub fn ipv4_routes() -> Result<Vec<RouteEntry>, IpHelperError> {
        sys::ipv4_routes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_the_call_and_the_code() {
        let err = IpHelperError::new("SetIpInterfaceEntry", 87);
        assert_eq!(
            err.to_string(),
            "SetIpInterfaceEntry failed with win32 error 87"
        );
        assert_eq!(err.op(), "SetIpInterfaceEntry");
        assert_eq!(err.code(), 87);
        assert!(!err.is_already_exists() && !err.is_not_found() && !err.is_access_denied());
    }

    #[test]
    fn replayable_outcomes_are_recognised() {
        let exists = IpHelperError::new("CreateIpForwardEntry2", 5010);
        assert!(exists.is_already_exists());
        assert!(exists.to_string().ends_with("(already exists)"));
        assert!(IpHelperError::new("DeleteUnicastIpAddressEntry", 1168).is_not_found());
        assert!(IpHelperError::new("GetIpInterfaceEntry", 2).is_not_found());
        let denied = IpHelperError::new("CreateUnicastIpAddressEntry", 5);
        assert!(denied.is_access_denied());
        assert!(denied.to_string().contains("run as administrator"));
    }

    #[test]
    fn io_error_keeps_the_win32_code() {
        let io: io::Error = IpHelperError::new("DeleteIpForwardEntry2", 1168).into();
        assert_eq!(io.raw_os_error(), Some(1168));
    }
}
