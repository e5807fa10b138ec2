//! Ethernet emulation for L3 adapters: ARP, IPv6 neighbour discovery, multicast mapping, DHCP client.
