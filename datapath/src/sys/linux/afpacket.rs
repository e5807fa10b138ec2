//! AF_PACKET sockets with PACKET_MMAP rings (TPACKET_V3 RX, TX ring).
