"""Scapy builders for plain (non-TLS) test traffic.

Every builder is deterministic: randomness comes from a ``random.Random``
seeded by the caller, and Scapy is never left to pick a MAC or an address.
Frames are ``bytes`` without FCS.

:class:`Case` pairs a frame with what its construction intends the card to
see (protocols, checksum verdicts on RX, which checksums TX offload may fill);
those expectations come from how the frame was built, not from the model, so
tests can hold the model (and the gateware) against them. Where a checksum is
involved, :func:`recompute_checksums` asks Scapy for the right value.
"""

import dataclasses
import random

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Padding, Raw

__all__ = [
    "Case", "SIZES", "JUMBO", "MAC_HOST", "MAC_PEER",
    "build", "recompute_checksums", "corrupt_ip_checksum", "corrupt_l4_checksum",
    "garble_checksums", "truncate",
    "size_sweep", "rx_cases", "tx_offload_cases",
]

MAC_HOST, MAC_PEER = "02:00:00:00:00:01", "02:00:00:00:00:02"
IP4_HOST, IP4_PEER = "192.0.2.1", "198.51.100.2"
IP6_HOST, IP6_PEER = "2001:db8::1", "2001:db8:1::2"
ETHERTYPE_LOCAL_EXPERIMENTAL = 0x88B5
#: Frame sizes (bytes without FCS) every size sweep covers: the minimum, around
#: powers of two and bus-width boundaries, standard and VLAN maximum, jumbo.
SIZES = (60, 61, 63, 64, 65, 127, 128, 129, 255, 256, 511, 512, 1023, 1024,
         1500, 1514, 1518, 2048, 4095, 4096, 8192, 9014)
JUMBO = 9014


@dataclasses.dataclass(frozen=True)
class Case:
    """A test frame and what its construction intends.

    Attributes
    ----------
    name : str
    data : bytes
    l3_proto, l4_proto, ip_csum, l4_csum : str
        Expected RX completion fields, as :mod:`tlsnic.abi` enum member names.
    tx_ip, tx_l4 : bool
        Whether TX offload may fill the IPv4 header / L4 checksum.
    """
    name: str
    data: bytes
    l3_proto: str = "OTHER"
    l4_proto: str = "OTHER"
    ip_csum: str = "NONE"
    l4_csum: str = "NONE"
    tx_ip: bool = False
    tx_l4: bool = False


def _l2(vlan):
    eth = Ether(dst=MAC_PEER, src=MAC_HOST)
    return eth / Dot1Q(vlan=vlan) if vlan is not None else eth


def _l3(l3, l4):
    if l3 == "ipv4":
        return IP(src=IP4_HOST, dst=IP4_PEER, id=0x1234, ttl=64)
    if l3 == "ipv6":
        return IPv6(src=IP6_HOST, dst=IP6_PEER, hlim=64)
    raise ValueError(f"unknown l3 {l3!r}")


def _l4(l3, l4, rng):
    if l4 == "tcp":
        return TCP(sport=rng.randrange(1024, 65536), dport=443, seq=rng.getrandbits(32),
                   ack=rng.getrandbits(32), flags="PA", window=65535)
    if l4 == "udp":
        return UDP(sport=rng.randrange(1024, 65536), dport=4433)
    if l4 == "icmp":
        return ICMP(id=rng.getrandbits(16), seq=1) if l3 == "ipv4" else ICMPv6EchoRequest(id=1, seq=1)
    raise ValueError(f"unknown l4 {l4!r}")


def build(l3="ipv4", l4="tcp", size=64, vlan=None, rng=None):
    """One well-formed frame of exactly ``size`` bytes (or just its headers, if longer).

    Parameters
    ----------
    l3 : {"ipv4", "ipv6", "other"}
        "other" is a local-experimental EtherType with no IP at all.
    l4 : {"tcp", "udp", "icmp", None}
    size : int
        Frame length without FCS; the payload is random bytes filling it.
    vlan : int, optional
        VLAN id of one 802.1Q tag.
    rng : random.Random, optional
        Source of ports, sequence numbers and payload (seed 0 by default).
    """
    rng = rng or random.Random(0)
    if l3 == "other":
        headers = _l2(vlan)
        headers.lastlayer().type = ETHERTYPE_LOCAL_EXPERIMENTAL
    else:
        headers = _l2(vlan) / _l3(l3, l4)
        if l4 is not None:
            headers = headers / _l4(l3, l4, rng)
    room = size - len(headers)
    packet = headers / Raw(rng.randbytes(room)) if room > 0 else headers
    return bytes(packet)


def recompute_checksums(frame, ip=True, l4=True):
    """Scapy's version of ``frame`` with the IPv4 and/or TCP/UDP checksums recomputed.

    The independent oracle for TX offload and RX verification: Scapy parses
    the frame, forgets the chosen checksum fields and rebuilds them.
    """
    packet = Ether(frame)
    for layer in (IP, TCP, UDP):
        if layer in packet and ((layer is IP and ip) or (layer is not IP and l4)):
            del packet[layer].chksum
    return bytes(packet)


def _replace_checksum(frame, layer, bad):
    packet = Ether(frame)
    good = Ether(bytes(packet))[layer].chksum
    packet[layer].chksum = bad(good)
    return bytes(packet)


def _wrong(good):
    """A checksum that cannot verify: not ``good`` and not its one's-complement twin.

    0x0000 and 0xFFFF are the same number in one's complement, so flipping a
    pattern that maps neither onto the other keeps the result wrong; it also
    avoids 0, which would mean "no checksum" for UDP over IPv4.
    """
    bad = good ^ 0x0F0F
    return bad if bad not in (0, 0xFFFF) else good ^ 0x3030


def corrupt_ip_checksum(frame):
    """``frame`` with a wrong IPv4 header checksum."""
    return _replace_checksum(frame, IP, _wrong)


def corrupt_l4_checksum(frame):
    """``frame`` with a wrong TCP or UDP checksum."""
    layer = TCP if TCP in Ether(frame) else UDP
    return _replace_checksum(frame, layer, _wrong)


def garble_checksums(frame, rng):
    """``frame`` with random IPv4/TCP/UDP checksum fields, as a host might leave them for offload.

    Frames Scapy cannot rebuild byte for byte (headers cut short) come back
    unchanged.
    """
    try:
        packet = Ether(frame)
        for layer in (IP, TCP, UDP):
            if layer in packet:
                packet[layer].chksum = rng.getrandbits(16)
        garbled = bytes(packet)
    except Exception:   # Scapy's dissectors raise assorted errors on cut headers
        return bytes(frame)
    return garbled if len(garbled) == len(frame) else bytes(frame)


def truncate(frame, length):
    """The first ``length`` bytes of ``frame``: headers cut short, lengths left claiming more."""
    return bytes(frame)[:length]


def _padded_short_ipv4_udp(rng):
    """A tiny UDP datagram padded to 60 bytes with non-zero bytes the checksum must skip."""
    packet = (_l2(None) / IP(src=IP4_HOST, dst=IP4_PEER, id=7) / UDP(sport=5000, dport=5001)
              / Raw(b"\x42"))
    packet = Ether(bytes(packet))
    return bytes(packet / Padding(bytes([0xA5]) * (60 - len(packet))))


def size_sweep(sizes=SIZES, seed=1):
    """Well-formed TCP/UDP frames over IPv4/IPv6, with and without VLAN, for every size.

    Returns a list of :class:`Case`; frames whose headers exceed a size are
    left out (IPv6 + VLAN + TCP needs 78 bytes).
    """
    rng = random.Random(seed)
    cases = []
    for size in sizes:
        for l3 in ("ipv4", "ipv6"):
            for l4 in ("tcp", "udp"):
                for vlan in (None, 100):
                    data = build(l3, l4, size, vlan, rng)
                    if len(data) != size:
                        continue
                    cases.append(Case(
                        f"{l3}-{l4}{'-vlan' if vlan is not None else ''}-{size}", data,
                        l3.upper(), l4.upper(),
                        "GOOD" if l3 == "ipv4" else "NONE", "GOOD",
                        tx_ip=l3 == "ipv4", tx_l4=True))
    return cases


def rx_cases(seed=2):
    """Frames for RX parsing and checksum verification, each with its expected verdicts."""
    rng = random.Random(seed)
    cases = []

    def add(name, data, *expect, tx_ip=False, tx_l4=False):
        cases.append(Case(name, bytes(data), *expect, tx_ip=tx_ip, tx_l4=tx_l4))

    for l3 in ("ipv4", "ipv6"):
        ip_good = "GOOD" if l3 == "ipv4" else "NONE"
        for l4 in ("tcp", "udp"):
            for vlan in (None, 7):
                tag = "-vlan" if vlan is not None else ""
                good = build(l3, l4, rng.randrange(80, 1500), vlan, rng)
                add(f"{l3}-{l4}{tag}-good", good, l3.upper(), l4.upper(), ip_good, "GOOD",
                    tx_ip=l3 == "ipv4", tx_l4=True)
                add(f"{l3}-{l4}{tag}-bad-l4", corrupt_l4_checksum(good),
                    l3.upper(), l4.upper(), ip_good, "BAD", tx_ip=l3 == "ipv4", tx_l4=True)
                if l3 == "ipv4":
                    add(f"ipv4-{l4}{tag}-bad-ip", corrupt_ip_checksum(good),
                        "IPV4", l4.upper(), "BAD", "GOOD", tx_ip=True, tx_l4=True)
        add(f"{l3}-icmp", build(l3, "icmp", 98, None, rng), l3.upper(), "OTHER", ip_good, "NONE",
            tx_ip=l3 == "ipv4")

    # UDP without a checksum: fine over IPv4, forbidden over IPv6.
    for l3 in ("ipv4", "ipv6"):
        packet = Ether(build(l3, "udp", 200, None, rng))
        packet[UDP].chksum = 0
        add(f"{l3}-udp-zero-csum", bytes(packet), l3.upper(), "UDP",
            "GOOD" if l3 == "ipv4" else "NONE", "NONE" if l3 == "ipv4" else "BAD",
            tx_ip=l3 == "ipv4", tx_l4=True)

    # Non-IP, with and without a tag; two tags (only one is skipped); ARP.
    add("other-ethertype", build("other", None, 64, None, rng))
    add("other-ethertype-vlan", build("other", None, 64, 5, rng))
    add("arp", bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=MAC_HOST)
                     / ARP(hwsrc=MAC_HOST, psrc=IP4_HOST, pdst=IP4_PEER)
                     / Padding(bytes(18))))
    qinq = bytes(_l2(None) / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP(src=IP4_HOST, dst=IP4_PEER)
                 / UDP(sport=1, dport=2) / Raw(bytes(20)))
    add("ipv4-udp-qinq", qinq)

    # IPv4 with options (IHL 6): the header checksum covers them, L4 follows them.
    with_options = bytes(_l2(None) / IP(src=IP4_HOST, dst=IP4_PEER, options=b"\x94\x04\x00\x00")
                         / TCP(sport=1000, dport=443) / Raw(rng.randbytes(100)))
    add("ipv4-options-tcp", with_options, "IPV4", "TCP", "GOOD", "GOOD", tx_ip=True, tx_l4=True)
    # Ethernet padding after a short IPv4 datagram is not part of the segment.
    add("ipv4-udp-padded", _padded_short_ipv4_udp(rng), "IPV4", "UDP", "GOOD", "GOOD",
        tx_ip=True, tx_l4=True)

    # IPv4 fragments: the first (MF set) and the last (offset only).
    datagram = IP(src=IP4_HOST, dst=IP4_PEER, id=99) / UDP(sport=7, dport=9) / Raw(rng.randbytes(1200))
    pieces = fragment(datagram, fragsize=512)
    add("ipv4-fragment-first", bytes(_l2(None) / pieces[0]), "IPV4", "OTHER", "GOOD", "NONE", tx_ip=True)
    add("ipv4-fragment-last", bytes(_l2(None) / pieces[-1]), "IPV4", "OTHER", "GOOD", "NONE", tx_ip=True)

    # IPv6 extension headers hide L4 from the card.
    for ext, l4 in ((IPv6ExtHdrHopByHop(), "udp"), (IPv6ExtHdrDestOpt(), "tcp"),
                    (IPv6ExtHdrRouting(), "udp")):
        data = bytes(_l2(None) / IPv6(src=IP6_HOST, dst=IP6_PEER) / ext / _l4("ipv6", l4, rng)
                     / Raw(rng.randbytes(64)))
        add(f"ipv6-{type(ext).__name__}-{l4}", data, "IPV6", "OTHER", "NONE", "NONE")

    # Headers cut short. The L3 lengths still claim the full packet.
    tcp4 = build("ipv4", "tcp", 200, None, rng)
    udp6 = build("ipv6", "udp", 200, None, rng)
    add("cut-in-ethernet", truncate(tcp4, 10))
    add("cut-after-ethertype", truncate(tcp4, 14))
    add("cut-in-vlan-tag", truncate(build("ipv4", "tcp", 200, 3, rng), 16))
    add("ipv4-cut-in-ip-header", truncate(tcp4, 14 + 12), "IPV4", "OTHER", "BAD", "NONE")
    add("ipv4-cut-in-tcp-header", truncate(tcp4, 14 + 20 + 12), "IPV4", "TCP", "GOOD", "BAD",
        tx_ip=True)
    add("ipv4-cut-in-payload", truncate(tcp4, 150), "IPV4", "TCP", "GOOD", "BAD", tx_ip=True)
    add("ipv6-cut-in-ip-header", truncate(udp6, 14 + 30))
    add("ipv6-cut-in-udp-header", truncate(udp6, 14 + 40 + 4), "IPV6", "UDP", "NONE", "BAD")
    # A UDP length field of 4 (< 8): the segment is too short whatever the frame holds.
    short_udp = Ether(build("ipv4", "udp", 100, None, rng))
    short_udp[IP].len = 20 + 4
    del short_udp[IP].chksum   # the IP header checksum follows the new length
    add("ipv4-udp-too-short", bytes(short_udp), "IPV4", "UDP", "GOOD", "BAD", tx_ip=True)
    return cases


def tx_offload_cases(seed=3):
    """Frames for TX offload: :func:`rx_cases` and a size sweep, checksum fields garbled.

    The card must overwrite a garbled field it is asked to fill (the old
    contents count as zero) and leave every other byte alone.
    """
    rng = random.Random(seed)
    cases = []
    for case in size_sweep(seed=seed) + rx_cases(seed=seed):
        data = case.data
        if case.tx_ip or case.tx_l4:
            data = garble_checksums(data, rng)
        cases.append(dataclasses.replace(case, data=data))
    return cases
