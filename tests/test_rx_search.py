"""``hdl/tls/rx_search.py`` (amaranth.sim) against a Python scan: random and
crafted streams (headers, near misses, headers straddling words and frames),
random lane alignment, searches restarted with an empty window."""

import random

import pytest
from amaranth.sim import Simulator

from tlsnic.abi import TlsVersion, record_length_bounds
from tlsnic.hdl.tls.rx_search import HeaderScanner


def plausible(header, tls13):
    """The ABI's resync candidate rule, in Python."""
    lo, hi = record_length_bounds(TlsVersion.TLS_1_3 if tls13 else TlsVersion.TLS_1_2)
    ctype, v0, v1 = header[0], header[1], header[2]
    length = int.from_bytes(header[3:5], "big")
    type_ok = ctype == 23 if tls13 else 20 <= ctype <= 23
    return type_ok and v0 == v1 == 3 and lo <= length <= hi


def first_header(stream, tls13):
    for p in range(len(stream) - 4):
        if plausible(stream[p:p + 5], tls13):
            return p
    return None


def _crafted(rng, tls13, miss_only=False):
    """A header, or a near miss of one, with some random bytes around."""
    lo, hi = record_length_bounds(TlsVersion.TLS_1_3 if tls13 else TlsVersion.TLS_1_2)
    ctype = 23 if tls13 else rng.choice((20, 21, 22, 23))
    version = b"\x03\x03"
    length = rng.choice((lo, hi, rng.randrange(lo, hi + 1)))
    miss = rng.randrange(1, 4) if miss_only else rng.randrange(7)
    if miss == 1:
        ctype = rng.choice((19, 24, 0x17 ^ 0x80) if not tls13 else (20, 21, 22, 24))
    elif miss == 2:
        version = rng.choice((b"\x03\x01", b"\x03\x04", b"\x02\x03"))
    elif miss == 3:
        length = rng.choice((lo - 1, hi + 1, 0, 0xFFFF))
    return rng.randbytes(rng.randrange(0, 6)) + bytes([ctype]) + version + length.to_bytes(2, "big")


def _stream(rng, tls13, n):
    miss_only = rng.random() < 0.15        # near misses only: nothing to find
    out = b""
    while len(out) < n:
        out += (_crafted(rng, tls13, miss_only) if rng.random() < 0.5
                else rng.randbytes(rng.randrange(1, 12)))
    return out


def _words(rng, frame):
    """Split ``frame`` into words at a random lane alignment: (data, lo, hi) each."""
    lo = rng.randrange(8)
    buf = bytes(lo) + frame
    words = []
    for w in range(0, len(buf), 8):
        chunk = buf[w:w + 8]
        words.append((int.from_bytes(chunk.ljust(8, b"\0"), "little"), lo if w == 0 else 0,
                      len(chunk)))
    return words


@pytest.mark.parametrize("tls13", [False, True])
def test_scan_against_python(tls13):
    rng = random.Random(7 + tls13)
    dut = HeaderScanner()
    checked = {"found": 0, "straddle_word": 0, "straddle_frame": 0, "searches": 0}

    async def bench(ctx):
        ctx.set(dut.tls13, tls13)
        for search in range(120):
            # One search: frames follow each other without a gap until a
            # header is found (or the stream ends); the window starts empty.
            stream = _stream(rng, tls13, rng.randrange(4, 200))
            want = first_header(stream, tls13)
            window, count = 0, 0
            seen = 0            # stream bytes fed so far
            found_at = None
            rest = stream
            frame_starts = []
            while rest and found_at is None:
                size = rng.randrange(1, 40)
                frame, rest = rest[:size], rest[size:]
                frame_starts.append(seen)
                for data, lo, hi in _words(rng, frame):
                    ctx.set(dut.data, data)
                    ctx.set(dut.lo, lo)
                    ctx.set(dut.hi, hi)
                    ctx.set(dut.window_in, window)
                    ctx.set(dut.window_count_in, count)
                    if ctx.get(dut.found):
                        start = seen + ctx.get(dut.start) - lo
                        assert ctx.get(dut.end) == ctx.get(dut.start) + 5
                        assert ctx.get(dut.header).to_bytes(5, "little") == stream[start:start + 5]
                        found_at = start
                        if start < seen:
                            checked["straddle_word"] += 1
                            if start < frame_starts[-1]:
                                checked["straddle_frame"] += 1
                        break
                    window, count = ctx.get(dut.window_out), ctx.get(dut.window_count_out)
                    seen += hi - lo
                    expect = stream[max(0, seen - 4):seen]
                    assert count == min(4, seen)
                    assert window.to_bytes(4, "little")[4 - count:] == expect[len(expect) - count:]
            assert found_at == want, (search, stream.hex())
            checked["found"] += found_at is not None
            checked["searches"] += 1
            await ctx.delay(1e-9)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    # The crafted streams must have produced the interesting cases.
    assert checked["found"] > 40 and checked["straddle_word"] > 10 and checked["straddle_frame"] > 3
    assert checked["searches"] - checked["found"] > 5
