//! Network namespaces, veth pairs and bridges for test hosts and the lab.
