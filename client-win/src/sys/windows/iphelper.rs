//! IP Helper calls on IPv4 rows, converted from and to the portable types of
//! [`crate::adapter::iphelper`].

use std::net::Ipv4Addr;

use windows_sys::Win32::NetworkManagement::IpHelper::{
    ConvertInterfaceGuidToLuid, ConvertInterfaceIndexToLuid, ConvertInterfaceLuidToAlias,
    ConvertInterfaceLuidToIndex, CreateIpForwardEntry2, CreateUnicastIpAddressEntry,
    DeleteIpForwardEntry2, DeleteUnicastIpAddressEntry, FreeMibTable, GetIpForwardTable2,
    GetIpInterfaceEntry, GetIpInterfaceTable, GetUnicastIpAddressTable, InitializeIpForwardEntry,
    InitializeUnicastIpAddressEntry, MIB_IPFORWARD_ROW2, MIB_IPFORWARD_TABLE2, MIB_IPINTERFACE_ROW,
    MIB_IPINTERFACE_TABLE, MIB_UNICASTIPADDRESS_ROW, MIB_UNICASTIPADDRESS_TABLE,
    SetIpInterfaceEntry,
};
use windows_sys::Win32::NetworkManagement::Ndis::NET_LUID_LH;
use windows_sys::Win32::Networking::WinSock::{
    AF_INET, IN_ADDR, IN_ADDR_0, IpDadStatePreferred, MIB_IPPROTO_NETMGMT, SOCKADDR_IN,
    SOCKADDR_INET,
};
use windows_sys::core::GUID;

use crate::adapter::iphelper::{IpHelperError, IpInterface, RouteEntry, UnicastAddress};

type Result<T> = std::result::Result<T, IpHelperError>;

fn check(op: &'static str, code: u32) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(IpHelperError::new(op, code))
    }
}

fn net_luid(luid: u64) -> NET_LUID_LH {
    NET_LUID_LH { Value: luid }
}

fn luid_value(luid: &NET_LUID_LH) -> u64 {
    // SAFETY: both union fields are 64 bits of plain data; every bit pattern is a valid u64.
    unsafe { luid.Value }
}

fn sockaddr(addr: Ipv4Addr) -> SOCKADDR_INET {
    SOCKADDR_INET {
        Ipv4: SOCKADDR_IN {
            sin_family: AF_INET,
            sin_port: 0,
            // S_addr is in network byte order: the octets as they are in memory.
            sin_addr: IN_ADDR {
                S_un: IN_ADDR_0 {
                    S_addr: u32::from_ne_bytes(addr.octets()),
                },
            },
            sin_zero: [0; 8],
        },
    }
}

/// The IPv4 address in `addr`, or `None` for another family.
fn ipv4(addr: &SOCKADDR_INET) -> Option<Ipv4Addr> {
    // SAFETY: every variant starts with the address family, so `si_family` is always
    // initialised; `Ipv4` is read only when the family says it is the active variant, and its
    // `S_addr` is a plain u32 view of the address.
    unsafe {
        if addr.si_family != AF_INET {
            return None;
        }
        Some(Ipv4Addr::from(addr.Ipv4.sin_addr.S_un.S_addr.to_ne_bytes()))
    }
}

/// Reads a table returned by an IP Helper `Get*Table` call into a vector and frees it.
///
/// # Safety
///
/// `table` must be a table allocated by IP Helper (to be freed with `FreeMibTable`) whose first
/// field is the `u32` entry count and whose rows of type `Row` start at `rows_offset` bytes.
unsafe fn read_table<Table, Row: Copy, T>(
    table: *mut Table,
    rows_offset: usize,
    mut convert: impl FnMut(&Row) -> Option<T>,
) -> Vec<T> {
    struct Free(*const core::ffi::c_void);
    impl Drop for Free {
        fn drop(&mut self) {
            // SAFETY: the table came from an IP Helper Get*Table call and is freed once.
            unsafe { FreeMibTable(self.0) };
        }
    }
    let _free = Free(table.cast());
    // SAFETY: the caller guarantees the table starts with its u32 entry count.
    let count = unsafe { table.cast::<u32>().read() } as usize;
    // SAFETY: the caller guarantees `count` rows of type `Row` at `rows_offset` in the same
    // allocation, which stays alive and unchanged until `_free` drops after the conversion.
    let rows = unsafe {
        std::slice::from_raw_parts(table.cast::<u8>().add(rows_offset).cast::<Row>(), count)
    };
    rows.iter().filter_map(&mut convert).collect()
}

pub(crate) fn luid_to_index(luid: u64) -> Result<u32> {
    let mut index = 0;
    // SAFETY: both pointers are valid for the call.
    check("ConvertInterfaceLuidToIndex", unsafe {
        ConvertInterfaceLuidToIndex(&net_luid(luid), &mut index)
    })?;
    Ok(index)
}

pub(crate) fn index_to_luid(index: u32) -> Result<u64> {
    let mut luid = net_luid(0);
    // SAFETY: `luid` is valid for writes during the call.
    check("ConvertInterfaceIndexToLuid", unsafe {
        ConvertInterfaceIndexToLuid(index, &mut luid)
    })?;
    Ok(luid_value(&luid))
}

pub(crate) fn guid_to_luid(guid: u128) -> Result<u64> {
    let guid = GUID::from_u128(guid);
    let mut luid = net_luid(0);
    // SAFETY: both pointers are valid for the call.
    check("ConvertInterfaceGuidToLuid", unsafe {
        ConvertInterfaceGuidToLuid(&guid, &mut luid)
    })?;
    Ok(luid_value(&luid))
}

pub(crate) fn interface_alias(luid: u64) -> Result<String> {
    // NDIS_IF_MAX_STRING_SIZE + 1.
    let mut alias = [0_u16; 257];
    // SAFETY: `alias` holds `alias.len()` u16s and outlives the call.
    check("ConvertInterfaceLuidToAlias", unsafe {
        ConvertInterfaceLuidToAlias(&net_luid(luid), alias.as_mut_ptr(), alias.len())
    })?;
    let len = alias.iter().position(|&c| c == 0).unwrap_or(alias.len());
    Ok(String::from_utf16_lossy(&alias[..len]))
}

fn unicast_row(luid: u64, address: Ipv4Addr, prefix: u8) -> MIB_UNICASTIPADDRESS_ROW {
    let mut row = MIB_UNICASTIPADDRESS_ROW::default();
    // SAFETY: `row` is valid for writes; the call fills in defaults (infinite lifetimes).
    unsafe { InitializeUnicastIpAddressEntry(&mut row) };
    row.Address = sockaddr(address);
    row.InterfaceLuid = net_luid(luid);
    row.OnLinkPrefixLength = prefix;
    row.DadState = IpDadStatePreferred;
    row
}

pub(crate) fn add_ipv4_address(luid: u64, address: Ipv4Addr, prefix: u8) -> Result<()> {
    let row = unicast_row(luid, address, prefix);
    // SAFETY: `row` is a fully initialised row, valid for the call.
    check("CreateUnicastIpAddressEntry", unsafe {
        CreateUnicastIpAddressEntry(&row)
    })
}

pub(crate) fn remove_ipv4_address(luid: u64, address: Ipv4Addr, prefix: u8) -> Result<()> {
    let row = unicast_row(luid, address, prefix);
    // SAFETY: `row` is a fully initialised row, valid for the call.
    check("DeleteUnicastIpAddressEntry", unsafe {
        DeleteUnicastIpAddressEntry(&row)
    })
}

pub(crate) fn ipv4_addresses() -> Result<Vec<UnicastAddress>> {
    let mut table: *mut MIB_UNICASTIPADDRESS_TABLE = std::ptr::null_mut();
    // SAFETY: `table` is valid for writes; on success it points to a table we free below.
    check("GetUnicastIpAddressTable", unsafe {
        GetUnicastIpAddressTable(AF_INET, &mut table)
    })?;
    let offset = std::mem::offset_of!(MIB_UNICASTIPADDRESS_TABLE, Table);
    // SAFETY: a MIB_UNICASTIPADDRESS_TABLE from GetUnicastIpAddressTable: count, then rows.
    Ok(unsafe {
        read_table(table, offset, |row: &MIB_UNICASTIPADDRESS_ROW| {
            Some(UnicastAddress {
                luid: luid_value(&row.InterfaceLuid),
                index: row.InterfaceIndex,
                address: ipv4(&row.Address)?,
                prefix: row.OnLinkPrefixLength,
            })
        })
    })
}

fn interface_from_row(row: &MIB_IPINTERFACE_ROW) -> IpInterface {
    IpInterface {
        luid: luid_value(&row.InterfaceLuid),
        index: row.InterfaceIndex,
        metric: row.Metric,
        automatic_metric: row.UseAutomaticMetric,
        mtu: row.NlMtu,
        connected: row.Connected,
    }
}

fn interface_row(luid: u64) -> Result<MIB_IPINTERFACE_ROW> {
    // GetIpInterfaceEntry needs only the key (family and LUID) and fills in the rest, so the
    // row is not passed through InitializeIpInterfaceEntry first.
    let mut row = MIB_IPINTERFACE_ROW {
        Family: AF_INET,
        InterfaceLuid: net_luid(luid),
        ..Default::default()
    };
    // SAFETY: `row` carries the key (family and LUID) and is valid for writes.
    check("GetIpInterfaceEntry", unsafe {
        GetIpInterfaceEntry(&mut row)
    })?;
    Ok(row)
}

fn set_interface_row(mut row: MIB_IPINTERFACE_ROW) -> Result<()> {
    // "SitePrefixLength ... must be set to 0 for IPv4" or SetIpInterfaceEntry fails with
    // ERROR_INVALID_PARAMETER; GetIpInterfaceEntry may return another value.
    row.SitePrefixLength = 0;
    // SAFETY: `row` is a complete row read by GetIpInterfaceEntry, valid for the call.
    check("SetIpInterfaceEntry", unsafe {
        SetIpInterfaceEntry(&mut row)
    })
}

pub(crate) fn ipv4_interface(luid: u64) -> Result<IpInterface> {
    interface_row(luid).map(|row| interface_from_row(&row))
}

pub(crate) fn ipv4_interfaces() -> Result<Vec<IpInterface>> {
    let mut table: *mut MIB_IPINTERFACE_TABLE = std::ptr::null_mut();
    // SAFETY: `table` is valid for writes; on success it points to a table we free below.
    check("GetIpInterfaceTable", unsafe {
        GetIpInterfaceTable(AF_INET, &mut table)
    })?;
    let offset = std::mem::offset_of!(MIB_IPINTERFACE_TABLE, Table);
    // SAFETY: a MIB_IPINTERFACE_TABLE from GetIpInterfaceTable: count, then rows.
    Ok(unsafe {
        read_table(table, offset, |row: &MIB_IPINTERFACE_ROW| {
            Some(interface_from_row(row))
        })
    })
}

pub(crate) fn set_ipv4_metric(luid: u64, automatic: bool, metric: u32) -> Result<()> {
    let mut row = interface_row(luid)?;
    row.UseAutomaticMetric = automatic;
    row.Metric = metric;
    set_interface_row(row)
}

pub(crate) fn set_ipv4_mtu(luid: u64, mtu: u32) -> Result<()> {
    let mut row = interface_row(luid)?;
    row.NlMtu = mtu;
    set_interface_row(row)
}

fn route_row(
    luid: u64,
    destination: Ipv4Addr,
    prefix: u8,
    next_hop: Ipv4Addr,
    metric: u32,
) -> MIB_IPFORWARD_ROW2 {
    let mut row = MIB_IPFORWARD_ROW2::default();
    // SAFETY: `row` is valid for writes; the call fills in defaults (infinite lifetimes).
    unsafe { InitializeIpForwardEntry(&mut row) };
    row.InterfaceLuid = net_luid(luid);
    row.DestinationPrefix.Prefix = sockaddr(destination);
    row.DestinationPrefix.PrefixLength = prefix;
    row.NextHop = sockaddr(next_hop);
    row.Metric = metric;
    row.Protocol = MIB_IPPROTO_NETMGMT;
    row
}

pub(crate) fn add_ipv4_route(
    luid: u64,
    destination: Ipv4Addr,
    prefix: u8,
    next_hop: Ipv4Addr,
    metric: u32,
) -> Result<()> {
    let row = route_row(luid, destination, prefix, next_hop, metric);
    // SAFETY: `row` is a fully initialised row, valid for the call.
    check("CreateIpForwardEntry2", unsafe {
        CreateIpForwardEntry2(&row)
    })
}

pub(crate) fn remove_ipv4_route(
    luid: u64,
    destination: Ipv4Addr,
    prefix: u8,
    next_hop: Ipv4Addr,
) -> Result<()> {
    let row = route_row(luid, destination, prefix, next_hop, 0);
    // SAFETY: `row` is a fully initialised row, valid for the call.
    check("DeleteIpForwardEntry2", unsafe {
        DeleteIpForwardEntry2(&row)
    })
}

pub(crate) fn ipv4_routes() -> Result<Vec<RouteEntry>> {
    let mut table: *mut MIB_IPFORWARD_TABLE2 = std::ptr::null_mut();
    // SAFETY: `table` is valid for writes; on success it points to a table we free below.
    check("GetIpForwardTable2", unsafe {
        GetIpForwardTable2(AF_INET, &mut table)
    })?;
    let offset = std::mem::offset_of!(MIB_IPFORWARD_TABLE2, Table);
    // SAFETY: a MIB_IPFORWARD_TABLE2 from GetIpForwardTable2: count, then rows.
    Ok(unsafe {
        read_table(table, offset, |row: &MIB_IPFORWARD_ROW2| {
            Some(RouteEntry {
                luid: luid_value(&row.InterfaceLuid),
                index: row.InterfaceIndex,
                destination: ipv4(&row.DestinationPrefix.Prefix)?,
                prefix: row.DestinationPrefix.PrefixLength,
                // An on-link route may leave the next hop's family unset.
                next_hop: ipv4(&row.NextHop).unwrap_or(Ipv4Addr::UNSPECIFIED),
                metric: row.Metric,
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_holds_the_address_in_network_order() {
        let addr = Ipv4Addr::new(198, 18, 0, 1);
        let raw = sockaddr(addr);
        assert_eq!(ipv4(&raw), Some(addr));
        // SAFETY: `sockaddr` initialises the Ipv4 variant.
        let bytes = unsafe { raw.Ipv4.sin_addr.S_un.S_addr.to_ne_bytes() };
        assert_eq!(bytes, [198, 18, 0, 1]);
    }

    #[test]
    fn other_families_are_skipped() {
        let raw = SOCKADDR_INET { si_family: 23 };
        assert_eq!(ipv4(&raw), None);
    }

    #[test]
    fn interface_table_agrees_with_the_luid_index_conversions() {
        let interfaces = ipv4_interfaces().unwrap();
        assert!(
            !interfaces.is_empty(),
            "every Windows has an IPv4 loopback interface"
        );
        for interface in &interfaces {
            assert_eq!(luid_to_index(interface.luid).unwrap(), interface.index);
            assert_eq!(index_to_luid(interface.index).unwrap(), interface.luid);
            assert_eq!(
                ipv4_interface(interface.luid).unwrap().index,
                interface.index
            );
        }
    }

    #[test]
    fn unknown_luid_is_not_found() {
        let err = ipv4_interface(u64::MAX).unwrap_err();
        assert_eq!(err.op(), "GetIpInterfaceEntry");
        assert!(err.is_not_found() || err.code() == 87, "{err}");
    }

    #[test]
    fn loopback_address_and_route_are_listed() {
        let addresses = ipv4_addresses().unwrap();
        assert!(
            addresses.iter().any(|a| a.address == Ipv4Addr::LOCALHOST),
            "{addresses:?}"
        );
        let routes = ipv4_routes().unwrap();
        assert!(!routes.is_empty());
    }
}
