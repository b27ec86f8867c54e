"""Ethernet / IPv4 / IPv6 header parsing for checksum offload and verification.

Every field the checksum rules need (``tlsnic.abi``, "Header parsing and
checksums") lies in the first 32 bytes of a frame: EtherType and one VLAN tag,
the IPv4 version/IHL, total length, fragment bits and protocol, the IPv6
version, payload length and next header. So the parser looks at a 32-byte
*header window* (four datapath words, bytes past the frame end read as zero)
and produces offsets; whether a range really fits in the frame is decided
later, when the frame length is known.
"""

from amaranth import *
from amaranth.lib import data

from tlsnic.abi import L3Proto, L4Proto

__all__ = ["WINDOW_WORDS", "HeaderInfo", "parse_window"]

WINDOW_WORDS = 4
ETH_IPV4, ETH_IPV6, ETH_VLAN = 0x0800, 0x86DD, 0x8100
PROTO_TCP, PROTO_UDP = 6, 17


class HeaderInfo(data.Struct):
    """Offsets (bytes from the frame start) found in the header window."""
    l3_proto:   L3Proto
    l4_proto:   L4Proto     #: TCP/UDP only for a non-fragment with no IPv6 extension header
    l3:         5           #: 14 or 18
    l3_min:     7           #: bytes the L3 header needs to be recognised/complete
    ip_end:     7           #: IPv4: l3 + IHL*4 (end of the checksummed header)
    l4:         7           #: start of the L4 segment
    l4_end:     17          #: end of the L4 segment per the IP length field
    pseudo_start: 6         #: source + destination addresses (pseudo-header)
    pseudo_end: 6
    proto:      8           #: IPv4 protocol / IPv6 next header


def _be16(window, offset):
    return Cat(window.word_select(offset + 1, 8), window.word_select(offset, 8))


def parse_window(m, window):
    """Parse the 256-bit header ``window`` (byte ``k`` in bits ``8k+7..8k``).

    Returns a :class:`HeaderInfo` view driven combinationally.
    """
    info = Signal(HeaderInfo)
    ethertype = _be16(window, 12)
    vlan = ethertype == ETH_VLAN
    l3 = Mux(vlan, 18, 14)
    l3_type = Mux(vlan, _be16(window, 16), ethertype)

    def at(offset, width=8):
        """Field at ``l3 + offset`` (two candidates: with and without a VLAN tag)."""
        if width == 8:
            return Mux(vlan, window.word_select(18 + offset, 8), window.word_select(14 + offset, 8))
        return Mux(vlan, _be16(window, 18 + offset), _be16(window, 14 + offset))

    version = at(0)[4:8]
    ihl_bytes = Cat(C(0, 2), at(0)[0:4])
    total_length = at(2, 16)
    frag = at(6, 16)
    is_fragment = frag[13] | (frag[0:13] != 0)    # MF set, or a non-zero offset
    proto_v4 = at(9)
    payload_length = at(4, 16)
    next_header = at(6)

    m.d.comb += info.l3.eq(l3)
    with m.If((l3_type == ETH_IPV4) & (version == 4) & (ihl_bytes >= 20)):
        m.d.comb += [
            info.l3_proto.eq(L3Proto.IPV4),
            info.l3_min.eq(l3 + ihl_bytes),
            info.ip_end.eq(l3 + ihl_bytes),
            info.l4.eq(l3 + ihl_bytes),
            info.l4_end.eq(l3 + total_length),
            info.pseudo_start.eq(l3 + 12),
            info.pseudo_end.eq(l3 + 20),
            info.proto.eq(proto_v4),
        ]
        with m.If(~is_fragment & (proto_v4 == PROTO_TCP)):
            m.d.comb += info.l4_proto.eq(L4Proto.TCP)
        with m.If(~is_fragment & (proto_v4 == PROTO_UDP)):
            m.d.comb += info.l4_proto.eq(L4Proto.UDP)
    with m.Elif((l3_type == ETH_IPV6) & (version == 6)):
        m.d.comb += [
            info.l3_proto.eq(L3Proto.IPV6),
            info.l3_min.eq(l3 + 40),
            info.ip_end.eq(l3),
            info.l4.eq(l3 + 40),
            info.l4_end.eq(l3 + 40 + payload_length),
            info.pseudo_start.eq(l3 + 8),
            info.pseudo_end.eq(l3 + 40),
            info.proto.eq(next_header),
        ]
        with m.If(next_header == PROTO_TCP):
            m.d.comb += info.l4_proto.eq(L4Proto.TCP)
        with m.If(next_header == PROTO_UDP):
            m.d.comb += info.l4_proto.eq(L4Proto.UDP)
    return info
