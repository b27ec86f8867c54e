"""The board's RGMII interface and MAC on amaranth.sim, against Scapy frames and zlib.crc32.

Receive: DDR values as an RGMII PHY presents them -> RgmiiRx -> Mac -> the
NIC-side AXI4-Stream; transmit: AXI4-Stream -> Mac -> RgmiiTx -> DDR values,
decoded back into octets. Three clock domains with unrelated periods.
"""

import random
import zlib

import pytest
from amaranth import *
from amaranth.sim import Simulator
from scapy.all import Ether, IP, TCP, Raw

from tlsnic.hdl.board.crc import CRC16_CCITT, CRC32_ETH, crc_byte
from tlsnic.hdl.board.mac import Mac, MacCounter, IFG_BYTES
from tlsnic.hdl.board.rgmii import RgmiiRx, RgmiiTx, Speed

from board_phy_model import PREAMBLE, fcs, rx_cycles, tx_decode, wire_bytes

PERIODS = {"sync": 7e-9, "rgmii_rx": 8e-9, "rgmii_tx": 8e-9}


class Harness(Elaboratable):
    def __init__(self, **mac_args):
        self.rgmii_rx = RgmiiRx()
        self.rgmii_tx = RgmiiTx()
        self.mac = Mac(**mac_args)
        self.speed = Signal(Speed, init=Speed.S1000)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rgmii_rx = DomainRenamer("rgmii_rx")(self.rgmii_rx)
        m.submodules.rgmii_tx = DomainRenamer("rgmii_tx")(self.rgmii_tx)
        m.submodules.mac = self.mac
        m.d.comb += [
            self.rgmii_rx.speed.eq(self.speed), self.rgmii_tx.speed.eq(self.speed),
            self.mac.rx_stb.eq(self.rgmii_rx.stb), self.mac.rx_byte.eq(self.rgmii_rx.byte),
            self.mac.tx_stb.eq(self.rgmii_tx.stb), self.rgmii_tx.byte.eq(self.mac.tx_byte),
        ]
        return m


def _frame(rng, size):
    """A Scapy TCP frame of ``size`` bytes (without FCS)."""
    base = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2") / TCP()
    return bytes(base / Raw(bytes(rng.randrange(256) for _ in range(max(0, size - len(base))))))[:size]


def simulate(rx_symbols=(), tx_frames=(), *, speed=Speed.S1000, ready=lambda cycle: True,
             cycles=None, periods=PERIODS, **mac_args):
    """Run the harness; return (frames out on rx, TX DDR samples, counters, status)."""
    dut = Harness(**mac_args)
    sim = Simulator(dut)
    for domain, period in periods.items():
        sim.add_clock(period, domain=domain)
    received, samples, out = [], [], {}
    if cycles is None:
        cycles = len(rx_symbols) + sum(len(f) + 40 for f in tx_frames) * (
            1 if speed == Speed.S1000 else 10 if speed == Speed.S100 else 100) + 200

    async def drive_rx(ctx):
        ctx.set(dut.speed, speed)
        for d0, d1, c0, c1 in rx_symbols:
            ctx.set(dut.rgmii_rx.ddr_data, [d0, d1])
            ctx.set(dut.rgmii_rx.ddr_ctl, [c0, c1])
            await ctx.tick("rgmii_rx")
        ctx.set(dut.rgmii_rx.ddr_ctl, [0, 0])

    async def nic_side(ctx):
        mac = dut.mac
        pending = list(tx_frames)
        word_bytes, cur = [], bytearray()
        for cycle in range(int(cycles * periods["rgmii_tx"] / periods["sync"])):
            # NIC transmit: one frame after another, 8 bytes a beat.
            if pending and not word_bytes:
                f = pending.pop(0)
                word_bytes = [f[i:i + 8] for i in range(0, len(f), 8)]
            if word_bytes:
                chunk = word_bytes[0]
                ctx.set(mac.tx.tvalid, 1)
                ctx.set(mac.tx.tdata, int.from_bytes(chunk.ljust(8, b"\0"), "little"))
                ctx.set(mac.tx.tkeep, (1 << len(chunk)) - 1)
                ctx.set(mac.tx.tlast, len(word_bytes) == 1)
            else:
                ctx.set(mac.tx.tvalid, 0)
            rdy = ready(cycle)
            ctx.set(mac.rx.tready, rdy)
            await ctx.delay(1e-12)
            tx_taken = ctx.get(mac.tx.tvalid) and ctx.get(mac.tx.tready)
            rx_taken = rdy and ctx.get(mac.rx.tvalid)
            if rx_taken:
                keep = ctx.get(mac.rx.tkeep)
                n = bin(keep).count("1")
                assert keep == (1 << n) - 1
                cur += ctx.get(mac.rx.tdata).to_bytes(8, "little")[:n]
                if ctx.get(mac.rx.tlast):
                    received.append(bytes(cur))
                    cur = bytearray()
                else:
                    assert n == 8
            await ctx.tick("sync")
            if tx_taken:
                word_bytes.pop(0)
        out["counters"] = {c.name: ctx.get(mac.counters[c]) for c in MacCounter}
        out["status"] = ctx.get(dut.rgmii_rx.status)

    async def tx_monitor(ctx):
        t = dut.rgmii_tx
        while True:
            await ctx.tick("rgmii_tx")
            d, c, k = ctx.get(t.ddr_data), ctx.get(t.ddr_ctl), ctx.get(t.ddr_clk)
            samples.append((d[0], d[1], c[0], c[1], k[0], k[1]))

    sim.add_testbench(drive_rx)
    sim.add_testbench(nic_side)
    sim.add_testbench(tx_monitor, background=True)
    sim.run()
    return received, samples, out["counters"], out["status"]


# ---- CRC matrices against their Python oracles -------------------------------------------

def test_crc_matrices_match_zlib_and_crc_hqx():
    import binascii
    rng = random.Random(5)
    msg = bytes(rng.randrange(256) for _ in range(40))
    crc32, crc16 = Signal(32, init=CRC32_ETH.init), Signal(16, init=CRC16_CCITT.init)
    byte = Signal(8)
    m = Module()
    m.d.sync += [crc32.eq(crc_byte(CRC32_ETH, crc32, byte)), crc16.eq(crc_byte(CRC16_CCITT, crc16, byte))]
    sim = Simulator(m)
    sim.add_clock(1e-8)

    async def tb(ctx):
        for b in msg:
            ctx.set(byte, b)
            await ctx.tick()
        assert ctx.get(crc32) ^ 0xFFFFFFFF == zlib.crc32(msg)
        assert ctx.get(crc16) == binascii.crc_hqx(msg, 0xFFFF)
    sim.add_testbench(tb)
    sim.run()


# ---- receive ------------------------------------------------------------------------------

@pytest.mark.parametrize("speed", [Speed.S1000, Speed.S100])
def test_rx_good_frames_back_to_back(speed):
    rng = random.Random(1)
    frames = [_frame(rng, n) for n in (60, 61, 64, 67, 128, 301)]
    symbols = []
    for f in frames:
        symbols += rx_cycles(wire_bytes(f), speed)
    received, _, counters, status = simulate(symbols, speed=speed)
    assert received == frames
    assert counters["RX_OK"] == len(frames)
    assert sum(counters.values()) == len(frames)
    assert (status.link, status.speed, status.full_duplex) == (1, Speed.S1000, 1)


def test_rx_bad_fcs_runts_oversize_phy_error_dropped_and_counted():
    rng = random.Random(2)
    good = [_frame(rng, 100), _frame(rng, 60), _frame(rng, 200)]
    symbols = []
    symbols += rx_cycles(wire_bytes(good[0]))
    symbols += rx_cycles(wire_bytes(_frame(rng, 80), good_fcs=False))       # bad FCS
    symbols += rx_cycles(wire_bytes(_frame(rng, 59)))                       # runt (63 with FCS)
    symbols += rx_cycles(wire_bytes(good[1]))
    symbols += rx_cycles(wire_bytes(_frame(rng, 20)))                       # short runt
    symbols += rx_cycles(wire_bytes(_frame(rng, 90)), er_at=30)             # RX_ER mid-frame
    symbols += rx_cycles(wire_bytes(_frame(rng, 300)))                      # oversize (max 256)
    symbols += rx_cycles(b"\x55\x55\x12\x34\x56" * 3)                       # no SFD: noise
    symbols += rx_cycles(wire_bytes(good[2], preamble=b"\x55\xd5"))         # short preamble
    received, _, counters, _ = simulate(symbols, max_frame=256, rx_depth=64, tx_depth=64)
    assert received == good
    assert counters["RX_OK"] == 3
    assert counters["RX_FCS_ERRORS"] == 1
    assert counters["RX_RUNTS"] == 2
    assert counters["RX_PHY_ERRORS"] == 1
    assert counters["RX_OVERSIZE"] == 1
    assert counters["RX_OVERFLOW"] == 0


def test_rx_overflow_when_nic_stalls_then_recovers():
    """The NIC takes nothing for a while: frames beyond the buffer are dropped and
    counted, the ones that fit come out whole and in order, and traffic after the
    stall flows again."""
    rng = random.Random(3)
    frames = [_frame(rng, 200) for _ in range(8)]
    symbols = []
    for f in frames:
        symbols += rx_cycles(wire_bytes(f))
    late = _frame(rng, 120)
    stall = len(symbols) * 8 // 7 + 50
    symbols += [(0, 0, 0, 0)] * 200 + rx_cycles(wire_bytes(late))
    received, _, counters, _ = simulate(symbols, ready=lambda cycle: cycle > stall,
                                        rx_depth=128, tx_depth=64, max_frame=256, cdc_depth=8)
    dropped = counters["RX_OVERFLOW"]
    assert dropped >= 1
    assert counters["RX_OK"] + dropped == len(frames) + 1
    assert received[-1] == late
    kept = received[:-1]
    assert kept == [f for f in frames if f in kept]          # whole frames, in order
    assert len(kept) == counters["RX_OK"] - 1


@pytest.mark.parametrize("sync_period", [100e-9, 1e-6])
def test_rx_core_clock_too_slow_for_the_line(sync_period):
    """A core clock that cannot empty the receive crossing (10 MHz and 1 MHz
    against 125): frames that find it full are dropped and counted, never
    delivered cut or merged with the next; a frame that starts while the
    last one's drop is still owed is dropped whole; after a quiet spell a
    frame fits again."""
    rng = random.Random(6)
    frames = [_frame(rng, rng.choice((60, 64, 100, 300, 600))) for _ in range(10)]
    symbols = []
    for f in frames:
        symbols += rx_cycles(wire_bytes(f))
    quiet = int(40 * sync_period / PERIODS["rgmii_rx"])
    late = _frame(rng, 64)
    symbols += [(0, 0, 0, 0)] * quiet + rx_cycles(wire_bytes(late))
    periods = dict(PERIODS, sync=sync_period)
    received, _, counters, _ = simulate(symbols, periods=periods, cdc_depth=8,
                                        cycles=len(symbols) + quiet)
    assert counters["RX_OVERFLOW"] >= 1
    assert counters["RX_OK"] + counters["RX_OVERFLOW"] == len(frames) + 1
    assert counters["RX_OK"] == len(received)
    assert received[-1] == late
    assert received == [f for f in frames + [late] if f in received]     # whole, in order
    assert sum(counters.values()) == len(frames) + 1


def run_mac_rx(octets, room, **mac_args):
    """MacRx alone on amaranth.sim, a byte a clock: ``octets`` are (byte, dv,
    tag); ``room(tag, w_en)`` says whether its FIFO has room this cycle
    (``w_en`` as MacRx drives it without room). Returns the frames its words
    make as RxFrameStore reads them (a frame is the words up to a last word,
    ``drop`` forgets it) and the count of each event."""
    from tlsnic.hdl.board.mac import MacRx
    dut = MacRx(**mac_args)
    writes, events = [], {n: 0 for n in ("fcs", "runt", "oversize", "phy", "lost")}

    async def bench(ctx):
        for byte, dv, tag in list(octets) + [(0, 0, None)] * 20:
            ctx.set(dut.stb, 1)
            ctx.set(dut.byte, {"data": byte, "dv": dv, "er": 0})
            ctx.set(dut.w_rdy, 0)
            ctx.set(dut.w_rdy, room(tag, ctx.get(dut.w_en)))
            if ctx.get(dut.w_en) and ctx.get(dut.w_rdy):
                w = ctx.get(dut.w_data)
                writes.append((w.word.data, w.word.keep, w.word.last, w.drop))
            for n in events:
                events[n] += ctx.get(getattr(dut, f"ev_{n}"))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(8e-9)
    sim.add_testbench(bench)
    sim.run()
    delivered, cur = [], bytearray()
    for data, keep, last, drop in writes:
        cur += data.to_bytes(8, "little")[:bin(keep).count("1")]
        if last:
            if not drop:
                delivered.append(bytes(cur))
            cur = bytearray()
    return delivered, events


def _octets(frame, tag=None, **wire):
    return [(b, 1, tag) for b in wire_bytes(frame, **wire)] + [(0, 0, tag)] * 12


@pytest.mark.parametrize("seed", range(3))
def test_mac_rx_against_a_store_model_under_random_fifo_room(seed):
    """MacRx alone, its FIFO's room coming and going in spells (a slow reader),
    long enough to outlast a frame's start, so frames also begin while a drop
    word is still owed: exactly the good frames that lost no word arrive, in
    order; every other frame is counted once, as lost or as its fault."""
    rng = random.Random(seed)
    sent, octets = [], []
    for _ in range(40):
        f = _frame(rng, rng.choice((20, 60, 64, 100, 200, 300)))
        good = rng.random() < 0.8
        sent.append((f, good and 60 <= len(f) <= 256))
        octets += _octets(f, good_fcs=good)
    share = rng.choice((0.3, 0.6, 0.9))
    spell = [True]

    def room(tag, w_en):
        if rng.random() < 0.05:
            spell[0] = rng.random() < share
        return spell[0]

    delivered, events = run_mac_rx(octets, room, max_frame=256)
    good = [f for f, ok in sent if ok]
    assert delivered == [f for f in good if f in delivered]        # whole, in order
    assert len(delivered) + sum(events.values()) == len(sent)
    assert events["runt"] == sum(len(f) < 60 for f, _ in sent)
    assert events["oversize"] == sum(len(f) > 256 for f, _ in sent)
    assert len(delivered) < len(good)


def test_mac_rx_frame_starting_while_a_drop_is_owed_is_dropped_whole():
    """Frame A loses words to a full FIFO and ends with no room for its drop
    word; frame B starts while it is still owed, and room comes back exactly
    when B would write its first word (the adversary opens the FIFO the cycle
    MacRx asserts ``w_en``). B must not get in ahead of A's drop word: both
    are dropped and counted as lost, and C, after them, arrives whole."""
    rng = random.Random(7)
    a, b, c = _frame(rng, 200), _frame(rng, 200), _frame(rng, 100)
    a_words = [0]

    def room(tag, w_en):
        if tag == "a":                  # A loses its words after the fifth
            ok = a_words[0] < 5
            a_words[0] += ok and w_en
            return ok
        if tag == "b":                  # open just for B's own word
            return w_en
        return True

    delivered, events = run_mac_rx(_octets(a, "a") + _octets(b, "b") + _octets(c, "c"), room)
    assert delivered == [c]
    assert events["lost"] == 2


# ---- transmit -----------------------------------------------------------------------------

def _check_tx(frames, decoded):
    assert len(decoded) == len(frames)
    for f, (octets, err, gap) in zip(frames, decoded):
        assert not err
        assert octets[:8] == PREAMBLE
        body = octets[8:]
        padded = f.ljust(60, b"\0")
        assert body == padded + fcs(padded)
        assert zlib.crc32(body) == 0x2144DF1C            # residue: FCS right


@pytest.mark.parametrize("speed", [Speed.S1000, Speed.S100])
def test_tx_framing_padding_fcs_and_gap(speed):
    rng = random.Random(4)
    frames = [_frame(rng, n) for n in (14, 59, 60, 61, 64, 200)]
    _, samples, counters, _ = simulate(tx_frames=frames, speed=speed)
    decoded = tx_decode(samples, speed)
    _check_tx(frames, decoded)
    assert counters["TX_OK"] == len(frames)
    gaps = [gap for _, _, gap in decoded[1:]]
    assert min(gaps) >= IFG_BYTES
    if speed == Speed.S1000:
        assert gaps == [IFG_BYTES] * len(gaps)               # back to back at line rate


def test_tx_10mbps():
    rng = random.Random(6)
    frames = [_frame(rng, 60)]
    _, samples, counters, _ = simulate(tx_frames=frames, speed=Speed.S10)
    _check_tx(frames, tx_decode(samples, Speed.S10))


def test_tx_oversize_dropped_not_hung():
    rng = random.Random(7)
    frames = [_frame(rng, 100), _frame(rng, 600), _frame(rng, 100)]
    _, samples, counters, _ = simulate(tx_frames=frames, tx_depth=32, rx_depth=64, max_frame=248)
    decoded = tx_decode(samples)
    _check_tx([frames[0], frames[2]], decoded)
    assert counters["TX_OVERSIZE"] == 1
    assert counters["TX_OK"] == 2


def test_loopback_rx_to_tx_at_100():
    """What the MAC sends at 100 Mb/s, fed back into its receiver, comes out intact."""
    rng = random.Random(8)
    frames = [_frame(rng, 70), _frame(rng, 150)]
    _, samples, _, _ = simulate(tx_frames=frames, speed=Speed.S100)
    symbols = []
    for octets, _, _ in tx_decode(samples, Speed.S100):
        symbols += rx_cycles(octets, Speed.S100)
    received, _, counters, _ = simulate(symbols, speed=Speed.S100)
    assert received == frames
    assert counters["RX_OK"] == 2


def test_tx_underrun_ends_frame_with_tx_er_and_is_counted():
    """MacTx alone, fed a frame whose second word comes too late: the frame is cut
    with TX_ER, the late rest is drained, the next frame goes out intact."""
    from tlsnic.hdl.board.mac import MacTx
    dut = MacTx()
    sim = Simulator(dut)
    sim.add_clock(8e-9)
    rng = random.Random(9)
    late, good = _frame(rng, 80), _frame(rng, 64)
    seen = {"octets": [], "underrun": 0}

    async def feed(ctx):
        ctx.set(dut.stb, 1)
        for f, stall_after in ((late, 1), (good, None)):
            words = [f[i:i + 8] for i in range(0, len(f), 8)]
            for k, w in enumerate(words):
                ctx.set(dut.frames.payload.data, int.from_bytes(w.ljust(8, b"\0"), "little"))
                ctx.set(dut.frames.payload.keep, (1 << len(w)) - 1)
                ctx.set(dut.frames.payload.last, k == len(words) - 1)
                ctx.set(dut.frames.valid, 1)
                await ctx.tick().until(dut.frames.ready)
                if k == stall_after:
                    ctx.set(dut.frames.valid, 0)
                    await ctx.tick().repeat(40)
            ctx.set(dut.frames.valid, 0)
        await ctx.tick().repeat(200)

    async def watch(ctx):
        while True:
            *_, b, ev = await ctx.tick().sample(dut.byte, dut.ev_underrun)
            seen["octets"].append((b.data, b.dv, b.er))
            seen["underrun"] += ev

    sim.add_testbench(feed)
    sim.add_testbench(watch, background=True)
    sim.run()
    frames, cur = [], None
    for data, dv, er in seen["octets"]:
        if dv:
            cur = cur or [bytearray(), False]
            cur[0].append(data)
            cur[1] |= bool(er)
        elif cur:
            frames.append((bytes(cur[0]), cur[1]))
            cur = None
    assert seen["underrun"] == 1
    assert len(frames) == 2
    assert frames[0][1] and frames[0][0][8:24] == late[:16]     # cut after two words, with TX_ER
    assert not frames[1][1] and frames[1][0] == PREAMBLE + good + fcs(good)


@pytest.mark.parametrize("seed", range(3))
def test_packet_buffer_against_a_model(seed):
    """PacketBuffer alone, depth 8 so its pointers wrap many times: random
    writes, commits and drops, a reader with random back-pressure. The reader
    sees exactly the committed frames' words, in order, each as soon as the
    RAM's output register can take it; the buffer is full exactly when the
    open frame and the unread committed words fill it."""
    from collections import deque
    from tlsnic.hdl.board.packet_buffer import PacketBuffer
    rng = random.Random(seed)
    depth = 8
    dut = PacketBuffer(16, depth)
    committed, open_frame, seen = deque(), [], []
    expected = []

    async def bench(ctx):
        word = 0
        held = 0            # committed words the DUT holds (RAM and output register)
        next_valid = 0
        for _ in range(3000):
            w_en, commit, drop = rng.random() < 0.6, rng.random() < 0.15, rng.random() < 0.05
            ready = rng.random() < 0.5
            ctx.set(dut.w_data, word)
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_commit, commit)
            ctx.set(dut.w_drop, drop)
            ctx.set(dut.r.ready, ready)
            full = ctx.get(dut.w_full)
            valid = ctx.get(dut.r.valid)
            in_ram = held - valid       # the output register is not a RAM slot
            assert full == (in_ram + len(open_frame) == depth - 1), (in_ram, len(open_frame))
            # A committed word is read the cycle after its commit, if the
            # output register is free or being emptied: no cycle lost.
            assert valid == next_valid
            next_valid = (in_ram > 0 and (not valid or ready)) or (valid and not ready)
            if valid and ready:
                seen.append(ctx.get(dut.r.payload))
                held -= 1
            if w_en and not full:
                open_frame.append(word)
                word = (word + 1) & 0xFFFF
            if drop:
                open_frame.clear()
            elif commit:
                expected.extend(open_frame)
                held += len(open_frame)
                open_frame.clear()
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        ctx.set(dut.w_commit, 0)
        ctx.set(dut.w_drop, 0)
        ctx.set(dut.r.ready, 1)
        for _ in range(4 * depth):
            if ctx.get(dut.r.valid):
                seen.append(ctx.get(dut.r.payload))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == expected and len(expected) > 500
