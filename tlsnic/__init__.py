"""tlsnic: an inline-TLS NIC in Amaranth, with a kTLS-style driver and a cocotb co-simulation."""
