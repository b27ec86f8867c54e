"""Pure-Python models of the wire side of an RGMII PHY, for amaranth.sim tests.

Frames are built with Scapy and checked with :func:`zlib.crc32`; these helpers
only turn bytes into the DDR register values an RGMII PHY would present
(``(rxd_rise, rxd_fall, ctl_rise, ctl_fall)`` per receive clock) and back.
"""

import zlib

from tlsnic.hdl.board.rgmii import Speed, nibble_period

PREAMBLE = b"\x55" * 7 + b"\xd5"


def fcs(frame):
    return zlib.crc32(frame).to_bytes(4, "little")


def wire_bytes(frame, *, good_fcs=True, preamble=PREAMBLE):
    """Preamble, SFD, frame, FCS (corrupted when ``good_fcs`` is false)."""
    f = fcs(frame)
    if not good_fcs:
        f = bytes([f[0] ^ 0x01]) + f[1:]
    return preamble + frame + f


def rx_cycles(octets, speed=Speed.S1000, *, er_at=None, ifg=12, status=0b1101):
    """DDR values per receive clock for one frame's octets, then ``ifg`` idle octets.

    ``er_at``: index of an octet sent with RX_ER. ``status``: in-band status
    nibble shown between frames (default: link up, 1000, full duplex).
    """
    out = []
    for i, byte in enumerate(octets):
        er = int(i == er_at)
        if speed == Speed.S1000:
            out.append((byte & 15, byte >> 4, 1, 1 ^ er))
        else:
            out.append((byte & 15, byte & 15, 1, 1 ^ er))
            out.append((byte >> 4, byte >> 4, 1, 1 ^ er))
    per_octet = 1 if speed == Speed.S1000 else 2
    out += [(status, status, 0, 0)] * (ifg * per_octet)
    return out


def tx_decode(samples, speed=Speed.S1000):
    """Frames (preamble included) from per-cycle transmit DDR samples.

    ``samples``: ``(data_rise, data_fall, ctl_rise, ctl_fall, clk_rise, clk_fall)``
    per transmit clock. Returns ``[(octets, had_error, gap_before)]``; gaps are
    in octet times.
    """
    octets = []                              # (byte or None, en, er) per octet time
    if speed == Speed.S1000:
        for d0, d1, c0, c1, k0, k1 in samples:
            assert (k0, k1) == (1, 0), "TX_CLK must toggle every cycle at 1000 Mb/s"
            octets.append((d0 | d1 << 4, c0, c0 ^ c1))
    else:
        # The PHY samples TXD/TX_EN on TX_CLK's rising edges: find them in
        # the half-cycle stream.
        halves = []
        for d0, d1, c0, c1, k0, k1 in samples:
            halves += [(d0, c0, k0), (d1, c1, k1)]
        # TX_CLK: high for n half-cycles and low for n, throughout, rising a
        # quarter into each nibble: TXD steady n // 2 half-cycles before each
        # rising edge and n - n // 2 from it (what the PHY's setup and hold see).
        n = nibble_period(speed)
        rises = [i for i in range(1, len(halves)) if halves[i][2] and not halves[i - 1][2]]
        assert rises, "no TX_CLK edge"
        for a, b in zip(rises, rises[1:]):
            assert [k for _, _, k in halves[a:b]] == [1] * n + [0] * n, "TX_CLK not 50 % at 1/n"
        for r in rises[1:-1]:
            assert len({d for d, _, _ in halves[r - n // 2:r + n - n // 2]}) == 1, "TXD moves near TX_CLK's rise"
        nibbles, prev = [], 0
        for i, (d, c, k) in enumerate(halves):
            if k and not prev:
                # TX_ER is the falling-edge CTL xor the rising-edge one: look ahead.
                j = i
                while j < len(halves) and halves[j][2]:
                    j += 1
                fall_ctl = halves[j][1] if j < len(halves) else c
                nibbles.append((d, c, c ^ fall_ctl))
            prev = k
        n = nibble_period(speed)
        i = 0
        while i + 1 < len(nibbles):
            (lo, en0, er0), (hi, en1, er1) = nibbles[i], nibbles[i + 1]
            if not en0:
                octets.append((0, 0, 0))
                i += 1
                continue
            octets.append((lo | hi << 4, en0 & en1, er0 | er1))
            i += 2
    frames, cur, err, gap = [], None, False, 0
    for byte, en, er in octets:
        if en:
            if cur is None:
                cur, err, start_gap = bytearray(), False, gap
            cur.append(byte)
            err |= bool(er)
        else:
            if cur is not None:
                frames.append((bytes(cur), err, start_gap))
                cur, gap = None, 0
            gap += 1
    return frames
