"""``hdl/tls/rx.py`` (TlsRx, amaranth.sim) against the reference model, frame by frame.

Every action runs on the model's :class:`~tlsnic.cosim.model_tls_rx.TlsRxEngine`
(inside a ``ReferenceNic``) and on the gateware engine; the control statuses,
each frame's TLS completion fields and bytes, and the RX_TLS counters must be
identical. The streams are sealed with ``cryptography``; the scenarios cover
in-order streams of both versions and key sizes, gaps with and without a lost
header, the search with its candidate confirmed or rejected, headers that
straddle frames, implausible headers while tracking, tag failures, old and
duplicate segments, frames with bad checksums, steering answers and RX_FREE.
The card-level path (parser, RX engine, DMA) is covered by the cosim tests.
"""

import asyncio
import random

import pytest
from amaranth.sim import Simulator

from tlsnic.abi import (
    Counter, RxTlsStatus, TlsCipher, TlsRxResyncFlags, TlsRxResyncParams, TlsStaticParams,
    TlsVersion, TxDescriptor, TxOpcode, TxStatus, pack, unpack,
)
from tlsnic.cosim.model import ReferenceNic, parse_headers
from tlsnic.cosim.model_tls_rx import tcp_segment
from tlsnic.hdl.tls.rx import RxContext, TlsRx
from tlsnic.hdl.tls.table import ContextTable

from test_rx_engine_model import DPORT, ISN, SPORT, frame, seal

RX_COUNTERS = [c for c in Counter if c.name.startswith("RX_TLS_")]
FIELDS = ("tag", "tls", "auth_fail", "resync", "dec_start", "dec_end", "resync_offset")


def static_block(version, cipher=TlsCipher.AES_128_GCM, key=bytes(range(16)), iv=bytes(range(100, 112)),
                 seq=ISN, number=0, sport=SPORT, ip_version=4, port=0, raw_cipher=None):
    src = bytes([10, 0, 0, 2]) if ip_version == 4 else bytes.fromhex("fd00" + "00" * 13 + "02")
    dst = bytes([10, 0, 0, 1]) if ip_version == 4 else bytes.fromhex("fd00" + "00" * 13 + "01")
    return pack(TlsStaticParams, cipher=raw_cipher if raw_cipher is not None else cipher,
                version=version, port=port, tcp_seq=seq & 0xFFFF_FFFF, record_number=number,
                salt_iv=int.from_bytes(iv, "little"), key=int.from_bytes(key.ljust(32, b"\0"), "little"),
                src_port=sport, dst_port=DPORT, ip_version=ip_version,
                src_addr=int.from_bytes(src, "little"), dst_addr=int.from_bytes(dst, "little"))


def resync_block(seq, number=None):
    flags = TlsRxResyncFlags.CONFIRM if number is not None else 0
    return pack(TlsRxResyncParams, candidate_seq=seq & 0xFFFF_FFFF, flags=flags,
                record_number=number or 0)


class Pair:
    """The model and the gateware engine, driven together from a testbench."""

    def __init__(self, contexts=8, table_fold=1):
        self.nic = ReferenceNic(tls=True, rx_contexts=contexts)
        self.block = self.nic.memory.alloc(128)
        self.dut = TlsRx(contexts=contexts, table_fold=table_fold)
        self.events = {c: 0 for c in RX_COUNTERS}
        self.out_words = []
        self.progress, self.doing, self.finished = False, None, False

    # ---- model side
    def model_control(self, opcode, tag, block):
        async def run():
            await self.nic.memory.write(self.block, block.ljust(128, b"\0"))
            desc = unpack(TxDescriptor, pack(TxDescriptor, opcode=opcode, tag=tag, addr=self.block))
            return (await self.nic._transmit(desc))[0]
        return asyncio.run(run())

    # ---- gateware side
    async def control(self, ctx, opcode, tag, block):
        self.doing = (opcode, tag)
        want = self.model_control(opcode, tag, block)
        ctl = self.dut.ctl
        ctx.set(ctl.lookup_tag, tag)
        in_range, live = ctx.get(ctl.lookup_in_range), ctx.get(ctl.lookup_live)
        # The TX engine's checks (hdl/host/tx_engine.py) before the command.
        if not (in_range and not live if opcode is TxOpcode.RX_SET_STATIC else live):
            got = TxStatus.BAD_TAG
        else:
            ctx.set(ctl.cmd.payload.opcode, opcode)
            ctx.set(ctl.cmd.payload.tag, tag)
            ctx.set(ctl.cmd.valid, 1)
            await ctx.tick().until(ctl.cmd.ready)
            ctx.set(ctl.cmd.valid, 0)
            if opcode is not TxOpcode.RX_FREE:
                size = 128 if opcode is TxOpcode.RX_SET_STATIC else 16
                raw = block.ljust(size, b"\0")[:size]
                for i in range(0, size, 8):
                    ctx.set(ctl.data.payload.data, int.from_bytes(raw[i:i + 8], "little"))
                    ctx.set(ctl.data.payload.keep, 0xFF)
                    ctx.set(ctl.data.payload.last, i + 8 == size)
                    ctx.set(ctl.data.valid, 1)
                    await ctx.tick().until(ctl.data.ready)
                ctx.set(ctl.data.valid, 0)
            ctx.set(ctl.verdict.ready, 1)
            verdict, = await ctx.tick().sample(ctl.verdict.payload).until(ctl.verdict.valid)
            ctx.set(ctl.verdict.ready, 0)
            got = TxStatus(verdict.status)
        assert got == want, (opcode, tag, got, want)
        return got

    async def receive(self, ctx, raw, checked=True, port=0):
        self.doing = ("frame", raw.hex())
        want_fields, want_frame = self.nic.tls_rx.receive(port, raw, parse_headers(raw), checked)
        rx = self.dut.rx
        segment = tcp_segment(raw, parse_headers(raw))
        p = rx.frame.payload
        if segment is None:
            ctx.set(p.info.is_tcp, 0)
        else:
            (ipv, src, dst, sport, dport), seq, start, end = segment
            for name, value in (("is_tcp", 1), ("ipv6", ipv == 6),
                                ("src_addr", int.from_bytes(src, "little")),
                                ("dst_addr", int.from_bytes(dst, "little")),
                                ("src_port", sport), ("dst_port", dport), ("seq", seq),
                                ("payload_start", start), ("payload_end", end)):
                ctx.set(getattr(p.info, name), value)
        ctx.set(p.port, port)
        ctx.set(p.kept, len(raw))
        ctx.set(p.checked, checked)
        ctx.set(rx.frame.valid, 1)
        self.doing = ("frame facts", raw.hex())
        await ctx.tick().until(rx.frame.ready)
        self.doing = ("frame words", raw.hex())
        ctx.set(rx.frame.valid, 0)
        self.out_words.clear()
        for i in range(0, len(raw), 8):
            chunk = raw[i:i + 8]
            ctx.set(rx.i.payload.data, int.from_bytes(chunk.ljust(8, b"\0"), "little"))
            ctx.set(rx.i.payload.keep, (1 << len(chunk)) - 1)
            ctx.set(rx.i.payload.last, i + 8 >= len(raw))
            ctx.set(rx.i.valid, 1)
            await ctx.tick().until(rx.i.ready)
        ctx.set(rx.i.valid, 0)
        ctx.set(rx.result.ready, 1)
        self.doing = ("frame result", raw.hex())
        result, = await ctx.tick().sample(rx.result.payload).until(rx.result.valid)
        ctx.set(rx.result.ready, 0)
        while not self.out_words or not self.out_words[-1][1]:
            await ctx.tick()
        got_frame = b"".join(w for w, _ in self.out_words)[:len(raw)]
        got = {f: getattr(result, f) for f in FIELDS}
        got["tls"] = RxTlsStatus(got["tls"])
        assert got == want_fields, (got, want_fields)
        assert got_frame == want_frame
        return want_fields

    def run(self, scenario):
        """Run ``scenario(pair, ctx)`` (an async function) under the simulator."""
        dut = self.dut
        strobes = {
            Counter.RX_TLS_DECRYPTED_PACKETS: None, Counter.RX_TLS_DECRYPTED_BYTES: None,
        }

        async def collect(ctx):
            ctx.set(dut.rx.o.ready, 1)
            async for _, _, valid, word in ctx.tick().sample(dut.rx.o.valid, dut.rx.o.payload):
                self.progress |= bool(valid)
                if valid:
                    n = bin(word.keep).count("1")
                    self.out_words.append((word.data.to_bytes(8, "little")[:n], word.last))

        async def count(ctx):
            sigs = [dut.ev_frame, dut.ev_decrypted_bytes, dut.ev_records, dut.ev_auth_fail,
                    dut.ev_resync_req, dut.ev_lost_sync, dut.ev_ooo, dut.ev_resync_ok,
                    dut.ev_resync_fail, dut.ev_ctx, dut.ev_ctx_freed]
            async for _, _, *v in ctx.tick().sample(*sigs):
                (frame_, dbytes, records, fails, req, lost, ooo, ok, fail, made, freed) = v
                e = self.events
                if frame_:
                    e[Counter.RX_TLS_DECRYPTED_PACKETS] += dbytes != 0
                    e[Counter.RX_TLS_DECRYPTED_BYTES] += dbytes
                    e[Counter.RX_TLS_RECORDS] += records
                    e[Counter.RX_TLS_AUTH_FAIL] += fails
                    e[Counter.RX_TLS_RESYNC_REQ] += req
                    e[Counter.RX_TLS_LOST_SYNC] += lost
                e[Counter.RX_TLS_OOO] += ooo
                e[Counter.RX_TLS_RESYNC_OK] += ok
                e[Counter.RX_TLS_RESYNC_FAIL] += fail
                e[Counter.RX_TLS_CTX] += made
                e[Counter.RX_TLS_CTX_FREED] += freed

        async def watchdog(ctx):
            # A handshake that never comes must fail the test, not hang it.
            idle, last = 0, None
            async for _ in ctx.tick():
                if self.finished:
                    return
                idle = 0 if self.progress or self.doing is not last else idle + 1
                self.progress, last = False, self.doing
                assert idle < 5000, (f"no progress for 5000 clocks in {self.doing}; "
                                     f"{len(self.out_words)} words out, {self.out_words[-1:]}")

        async def bench(ctx):
            await scenario(self, ctx)
            for _ in range(4):
                await ctx.tick()
            want = {c: self.nic.counters[c] for c in RX_COUNTERS}
            assert self.events == want
            self.finished = True

        del strobes
        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_process(collect)
        sim.add_process(count)
        sim.add_process(watchdog)
        sim.add_testbench(bench)
        sim.run()
        assert self.finished, f"the scenario did not finish ({self.doing})"


def records(version, sizes, number=0, key=bytes(range(16)), iv=bytes(range(100, 112)), **kw):
    """Sealed records back to back and each one's start."""
    data, starts = b"", []
    for i, size in enumerate(sizes):
        starts.append(len(data))
        data += seal(version, number + i, bytes((i * 7 + j) & 0xFF for j in range(size)),
                     key=key, iv=iv, **kw)
    return data, starts


V12, V13 = TlsVersion.TLS_1_2, TlsVersion.TLS_1_3


@pytest.mark.parametrize("version,cipher", [(V13, TlsCipher.AES_128_GCM), (V12, TlsCipher.AES_256_GCM)])
def test_in_order_stream(version, cipher):
    key = bytes(range(32 if cipher is TlsCipher.AES_256_GCM else 16))
    data, _ = records(version, [0, 1, 300, 17, 700, 2], key=key)
    pair = Pair()

    async def scenario(pair, ctx):
        assert await pair.control(ctx, TxOpcode.RX_SET_STATIC, 1,
                                  static_block(version, cipher, key=key)) is TxStatus.OK
        for i in range(0, len(data), 213):
            fields = await pair.receive(ctx, frame(ISN + i, data[i:i + 213]))
            assert fields["tls"] is RxTlsStatus.TRACKING
    pair.run(scenario)
    assert pair.nic.counters[Counter.RX_TLS_RECORDS] == 6


def test_minimal_records_three_runs_a_word():
    # TLS 1.3 records of 22 bytes: a word can hold a tag's end, a payload byte
    # and a tag's start.
    data, _ = records(V13, [1] + [0] * 9)
    pair = Pair()

    async def scenario(pair, ctx):
        await pair.control(ctx, TxOpcode.RX_SET_STATIC, 1, static_block(V13))
        for i in range(0, len(data), 61):
            await pair.receive(ctx, frame(ISN + i, data[i:i + 61]))
    pair.run(scenario)


def test_gaps_search_resync_and_bad_input():
    version = V12
    data, starts = records(version, [400, 400, 400, 400, 400, 400], number=7)
    pair = Pair()
    fake = bytes([23, 3, 3, 1, 144])

    async def scenario(pair, ctx):
        assert await pair.control(ctx, TxOpcode.RX_SET_STATIC, 3,
                                  static_block(version, number=7)) is TxStatus.OK
        assert await pair.control(ctx, TxOpcode.RX_SET_STATIC, 4,
                                  static_block(version, number=7)) is TxStatus.STEER_EXISTS
        assert await pair.control(ctx, TxOpcode.RX_SET_STATIC, 3,
                                  static_block(version, number=7)) is TxStatus.BAD_TAG
        assert await pair.control(ctx, TxOpcode.RX_SET_STATIC, 5,
                                  static_block(version, raw_cipher=9)) is TxStatus.BAD_PARAMS
        seg = 150
        segs = [(i, data[i:i + seg]) for i in range(0, len(data), seg)]
        await pair.receive(ctx, frame(ISN + segs[0][0], segs[0][1]))
        await pair.receive(ctx, frame(ISN + segs[1][0], segs[1][1]), checked=False)
        await pair.receive(ctx, frame(ISN + segs[1][0], segs[1][1]))
        await pair.receive(ctx, frame(ISN + segs[0][0], segs[0][1]))            # old
        # A gap inside record 0 (its header seen): record 0 skipped.
        await pair.receive(ctx, frame(ISN + segs[3][0], segs[3][1]))
        # A gap over record 1's header (at 424): search.
        for i, chunk in segs[5:]:
            fields = await pair.receive(ctx, frame(ISN + i, chunk))
            if fields["resync"]:
                off = fields["resync_offset"] - ((fields["resync_offset"] & 0x8000) << 1)
                candidate = i + off
                number = starts.index(candidate) + 7 if candidate in starts else None
                assert await pair.control(ctx, TxOpcode.RX_RESYNC, 3,
                                          resync_block(ISN + candidate, number)) is TxStatus.OK
        # A stale answer, a resync on a free tag, a fake candidate rejected.
        await pair.control(ctx, TxOpcode.RX_RESYNC, 3, resync_block(ISN + 5, 1))
        await pair.control(ctx, TxOpcode.RX_RESYNC, 6, resync_block(ISN + 5, 1))
        end = len(data)
        await pair.receive(ctx, frame(ISN + end + 10, fake + bytes(40)))
        await pair.control(ctx, TxOpcode.RX_RESYNC, 3, resync_block(ISN + end + 10))
        await pair.receive(ctx, frame(ISN + end + 55, bytes(30)))
        assert await pair.control(ctx, TxOpcode.RX_FREE, 3, b"") is TxStatus.OK
        assert await pair.control(ctx, TxOpcode.RX_FREE, 3, b"") is TxStatus.BAD_TAG
        await pair.receive(ctx, frame(ISN + end + 85, bytes(30)))                 # no context
        assert await pair.control(ctx, TxOpcode.RX_SET_STATIC, 4,
                                  static_block(version, seq=ISN + end + 115)) is TxStatus.OK
    pair.run(scenario)
    c = pair.nic.counters
    assert c[Counter.RX_TLS_RESYNC_OK] == 1 and c[Counter.RX_TLS_RESYNC_REQ] >= 2
    assert c[Counter.RX_TLS_OOO] == 1 and c[Counter.RX_TLS_LOST_SYNC] >= 1


def test_header_straddles_frames_and_implausible_header():
    pair = Pair()
    data, starts = records(V13, [300])

    async def scenario(pair, ctx):
        await pair.control(ctx, TxOpcode.RX_SET_STATIC, 1, static_block(V13, seq=ISN - 100000))
        await pair.receive(ctx, frame(ISN, bytes(98) + bytes([23, 3])))
        fields = await pair.receive(ctx, frame(ISN + 100, bytes([3, 0, 40]) + bytes(50)))
        assert fields["resync"] and fields["resync_offset"] == 0x10000 - 2
        await pair.control(ctx, TxOpcode.RX_SET_STATIC, 2, static_block(V13, sport=777))
        # Decrypted record, then a header that is not one (split across words).
        fields = await pair.receive(ctx, frame(ISN, data + bytes([23, 3, 1, 0, 40]) + bytes(60),
                                               sport=777))
        assert fields["dec_end"] == len(data)
        # A header cut by the frame end while tracking, completed bad in the next one.
        await pair.control(ctx, TxOpcode.RX_SET_STATIC, 3, static_block(V13, sport=778))
        await pair.receive(ctx, frame(ISN, data + bytes([23, 3]), sport=778))
        fields = await pair.receive(ctx, frame(ISN + len(data) + 2, bytes([2, 0, 40]) + bytes(9),
                                               sport=778))
        assert fields["dec_start"] == fields["dec_end"] == 0
    pair.run(scenario)


def test_tag_failure_keeps_sync():
    data, starts = records(V13, [100, 100, 100])
    bad = bytearray(data)
    bad[starts[1] - 1] ^= 1
    bad[starts[2] - 20] ^= 0x40
    pair = Pair()

    async def scenario(pair, ctx):
        await pair.control(ctx, TxOpcode.RX_SET_STATIC, 1, static_block(V13))
        for i in range(0, len(bad), 120):
            await pair.receive(ctx, frame(ISN + i, bytes(bad[i:i + 120])))
    pair.run(scenario)
    assert pair.nic.counters[Counter.RX_TLS_AUTH_FAIL] == 2


@pytest.mark.parametrize("fold", [1, 2])
def test_free_leaves_zeros(monkeypatch, fold):
    """RX_FREE writes both entries with zeros: the key, and the GCM progress
    of a record split across frames (written apart, ``table.py``), as the
    tables store them."""
    tables = []
    init = ContextTable.__init__
    monkeypatch.setattr(ContextTable, "__init__",
                        lambda self, *a, **kw: (init(self, *a, **kw), tables.append(self))[0])
    data, _ = records(V12, [300])
    pair = Pair(table_fold=fold)

    async def scenario(pair, ctx):
        await pair.control(ctx, TxOpcode.RX_SET_STATIC, 3, static_block(V12))
        await pair.receive(ctx, frame(ISN, data[:100]))
        conns, table = tables
        assert conns.peek(ctx, 3) != 0 and table.peek(ctx, 3) != 0
        assert RxContext.from_bits(table.peek(ctx, 3)).rec.gcm_saved
        assert await pair.control(ctx, TxOpcode.RX_FREE, 3, b"") is TxStatus.OK
        assert conns.peek(ctx, 3) == 0 and table.peek(ctx, 3) == 0
    pair.run(scenario)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_loss_reorder_and_resync(seed):
    """Random records, MSS, losses, duplicates, reordering and bad checksums;
    the driver confirms true candidates with their numbers and rejects the rest."""
    rng = random.Random(seed)
    version = rng.choice((V12, V13))
    cipher = rng.choice((TlsCipher.AES_128_GCM, TlsCipher.AES_256_GCM))
    key = rng.randbytes(32 if cipher is TlsCipher.AES_256_GCM else 16)
    iv = rng.randbytes(12)
    sizes = [rng.choice((0, 1, 15, 16, rng.randrange(300))) for _ in range(30)]
    data, starts = records(version, sizes, number=100, key=key, iv=iv)
    mss = rng.randrange(40, 200)
    segs = [(i, data[i:i + mss]) for i in range(0, len(data), mss)]
    order = []
    for s in segs:
        r = rng.random()
        if r < 0.1:
            continue                    # lost
        order.append(s)
        if r < 0.15:
            order.append(s)             # duplicate
    for i in range(len(order) - 1):
        if rng.random() < 0.08:
            order[i], order[i + 1] = order[i + 1], order[i]
    pair = Pair()

    async def scenario(pair, ctx):
        await pair.control(ctx, TxOpcode.RX_SET_STATIC, 2,
                           static_block(version, cipher, key=key, iv=iv, number=100))
        for offset, chunk in order:
            checked = rng.random() > 0.05
            fields = await pair.receive(ctx, frame(ISN + offset, chunk), checked=checked)
            if fields["resync"]:
                off = fields["resync_offset"] - ((fields["resync_offset"] & 0x8000) << 1)
                cand = offset + off
                number = starts.index(cand) + 100 if cand in starts else None
                await pair.control(ctx, TxOpcode.RX_RESYNC, 2, resync_block(ISN + cand, number))
    pair.run(scenario)
