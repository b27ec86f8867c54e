"""``tlsnic bench gcm``: throughput and context-switch cost of the GCM engine, by simulation.

Also home of :class:`GcmDriver`, the cocotb driver/scoreboard shared by the
engine's tests (``tests/cocotb/tb_gcm.py``) and this benchmark: it cuts records
into chunks and segments, interleaves segments of several records with
save/restore, inserts input gaps and output back-pressure, and checks every
output byte, saved state order and tag.

Measured quantities (clock cycles of the simulated engine, not wall time):

* bits per clock for AES-128 and AES-256 records of 16 B, 256 B, 1 KB, 16 KB
  (TLS 1.3 framing: 5 bytes AAD, the text, 16 bytes tag, fed as 16-byte chunks
  back to back, records back to back), counting record text bits: records of
  one connection (one key, as TLS sends them), and a new key every record;
* context-switch cost: extra cycles when every record is cut into segments and
  the segments of eight records (eight keys) are interleaved with save/restore,
  over the same records unsegmented, for 128 B and 1,456 B segments;
* simulation speed: simulated cycles per wall-clock second under Verilator.
"""

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

__all__ = ["Record", "GcmDriver", "main"]

_REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------- layouts as ints

def _fields(layout):
    from amaranth.lib import data
    shape = data.Layout.cast(layout)
    return {name: (f.offset, f.width) for name, f in shape}


def _pack(fields, **vals):
    v = 0
    for k, x in vals.items():
        off, w = fields[k]
        v |= (int(x) & ((1 << w) - 1)) << off
    return v


def _get(fields, v, k):
    off, w = fields[k]
    return (v >> off) & ((1 << w) - 1)


class Record:
    """One TLS-style AES-GCM record to push through the engine, with its expected output.

    Parameters
    ----------
    key, iv, aad, text : bytes
        ``text`` is the engine's TEXT input: plaintext to encrypt, or ciphertext
        to decrypt.
    decrypt : bool
    tag_in : bytes
        The 16 TAG bytes fed in: the received tag (decrypt) or placeholders.
    expect_text : bytes
        Expected TEXT output (from ``seek`` on).
    expect_tag : bytes or None
        Expected computed tag (encrypt), checked on the output TAG bytes and ``o_tag``.
    expect_ok : bool
        Expected ``o_tag.ok``.
    seek : int or None
        Start at this TEXT byte offset (no AAD, no earlier TEXT): tag not computable.
    hgen : bool
        Let the engine derive H (else H is given in the state).
    """

    def __init__(self, key, iv, aad, text, decrypt, tag_in, expect_text, expect_tag, expect_ok,
                 seek=None, hgen=True, name=""):
        self.key, self.iv, self.aad, self.text = key, iv, aad, text
        self.decrypt, self.tag_in = decrypt, tag_in
        self.expect_text, self.expect_tag, self.expect_ok = expect_text, expect_tag, expect_ok
        self.seek, self.hgen, self.name = seek, hgen, name

    @classmethod
    def make(cls, key, iv, aad, pt, *, decrypt=False, corrupt=False, seek=None, hgen=True, name=""):
        """Build a record and its expectations with ``cryptography``'s AESGCM."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        ct_tag = AESGCM(key).encrypt(iv, pt, aad)
        ct, tag = ct_tag[:-16], ct_tag[-16:]
        if decrypt:
            tag_in = bytes([tag[0] ^ 1]) + tag[1:] if corrupt else tag
            return cls(key, iv, aad, ct, True, tag_in, pt[seek or 0:], None,
                       not corrupt and seek is None, seek, hgen, name)
        return cls(key, iv, aad, pt, False, bytes(16), ct[seek or 0:], tag if seek is None else None,
                   seek is None, seek, hgen, name)

    def to_json(self):
        d = dict(vars(self))
        for k in ("key", "iv", "aad", "text", "tag_in", "expect_text", "expect_tag"):
            d[k] = d[k].hex() if d[k] is not None else None
        return d

    @classmethod
    def from_json(cls, d):
        d = dict(d)
        for k in ("key", "iv", "aad", "text", "tag_in", "expect_text", "expect_tag"):
            d[k] = bytes.fromhex(d[k]) if d[k] is not None else None
        return cls(**d)

    def initial_state(self, fields):
        from tlsnic.hdl.crypto.gcm import state_record, state_seek
        from tlsnic.hdl.crypto.aes import aes_encrypt_ref
        h = None if self.hgen else aes_encrypt_ref(self.key, bytes(16))
        if self.seek is None:
            st = state_record(self.key, self.iv, decrypt=self.decrypt, h=h)
        else:
            st = state_seek(self.key, self.iv, self.seek, decrypt=self.decrypt, h=h)
        return _pack(fields, **st)


class GcmDriver:
    """Drive a ``GcmEngine`` top under cocotb: one Python wake-up per clock.

    Parameters
    ----------
    dut : cocotb handle of the engine top.
    rng : random.Random
    gap : float
        Probability of an idle cycle before an input chunk.
    backpressure : float
        Probability that an output's ready is low in a cycle.
    chunking : str
        ``"full"``: 16-byte chunks (cut at kind boundaries); ``"net"``: up to 8
        bytes as from the 64-bit network datapath, random start alignment;
        ``"random"``: 0..16 bytes.
    segment : float
        Probability, per chunk boundary, of ending a segment there (save, then
        restore later, with other records' segments in between); a value of 1
        or more cuts every ``int(segment)`` chunks instead.
    interleave : int
        Records whose segments are interleaved.
    prefix : str
        Port name prefix: ``"users__1__"`` drives one user port of a
        :class:`~tlsnic.hdl.crypto.share.GcmShare`, and then also its ``hold``
        (from a segment's first chunk until its last one is taken).
    """

    def __init__(self, dut, rng, gap=0.0, backpressure=0.0, chunking="full", segment=0.0,
                 interleave=1, prefix=""):
        from tlsnic.hdl.crypto.gcm import Chunk, GcmState, OutChunk, TagResult
        self.dut, self.rng = dut, rng
        self.gap, self.bp, self.chunking = gap, backpressure, chunking
        self.segment, self.interleave = segment, interleave
        self.fc, self.fs = _fields(Chunk), _fields(GcmState)
        self.fo, self.ft = _fields(OutChunk), _fields(TagResult)
        self.prefix = prefix
        self.cycles = 0
        self.first_out = None
        self.taken_at = []       # the cycle of each input chunk the engine took

    @classmethod
    def from_job(cls, dut, run, prefix=""):
        """A driver with a job's knobs (``seed``, ``gap``, ``backpressure``,
        ``chunking``, ``segment``, ``interleave``: see ``tests/test_crypto_gcm.py``)."""
        return cls(dut, random.Random(run["seed"]), gap=run["gap"], backpressure=run["backpressure"],
                   chunking=run["chunking"], segment=run["segment"],
                   interleave=run["interleave"], prefix=prefix)

    def _sizes(self, n, first):
        out = []
        while n > 0:
            if self.chunking == "full":
                c = 16
            elif self.chunking == "net":
                c = 8 - first % 8 if out == [] else 8
            else:
                c = self.rng.randint(0, 16)
            c = min(c, n)
            out.append(c)
            n -= c
        return out

    def _chunks(self, rec):
        """(kind, bytes in, bytes expected out or None) for one record."""
        items = []
        stream = []
        if rec.seek is None:
            stream.append((0, rec.aad, rec.aad))
            stream.append((1, rec.text, rec.expect_text))
        else:
            stream.append((1, rec.text[rec.seek:], rec.expect_text))
        tag_out = rec.tag_in if rec.decrypt else rec.expect_tag
        stream.append((2, rec.tag_in, tag_out))
        pos = self.rng.randrange(8)
        for kind, src, exp in stream:
            off = 0
            sizes = self._sizes(len(src), pos)
            if kind == 1 and not src and self.rng.random() < 0.5:
                sizes = [0]            # an empty TEXT chunk is legal too
            for c in sizes:
                items.append((kind, src[off:off + c], exp[off:off + c] if exp is not None else None))
                off += c
                pos += c
        return items

    async def run(self, records, max_cycles=10_000_000):
        """Push ``records`` through; raise AssertionError on any mismatch. Returns cycles."""
        from cocotb.triggers import RisingEdge
        dut, rng = self.dut, self.rng
        # Build segments per record, then interleave them.
        per_rec = []
        for rid, rec in enumerate(records):
            chunks = self._chunks(rec)
            segs, cur = [], []
            for i, c in enumerate(chunks):
                cur.append(c)
                if self.segment >= 1:
                    cut = (i + 1) % int(self.segment) == 0
                else:
                    cut = rng.random() < self.segment
                if i + 1 < len(chunks) and cut:
                    segs.append(cur)
                    cur = []
            segs.append(cur)
            per_rec.append(segs)
        sched = []     # (rid, kind, data, exp, load, save, is_last_of_record)
        for g in range(0, len(records), self.interleave):
            group = list(range(g, min(g + self.interleave, len(records))))
            idx = {r: 0 for r in group}
            while group:
                for r in list(group):
                    seg = per_rec[r][idx[r]]
                    idx[r] += 1
                    done = idx[r] == len(per_rec[r])
                    for j, (kind, d, e) in enumerate(seg):
                        sched.append((r, kind, d, e, j == 0, j == len(seg) - 1 and not done,
                                      done and j == len(seg) - 1))
                    if done:
                        group.remove(r)
        states = {r: [rec.initial_state(self.fs)] for r, rec in enumerate(records)}
        fc, fo, ft, fs = self.fc, self.fo, self.ft, self.fs

        ic_v, ic_r, ic_p, is_v, is_r, is_p, oc_v, oc_r, oc_p, os_v, os_r, os_p, ot_v, ot_r, ot_p = (
            getattr(dut, f"{self.prefix}{port}__{sig}")
            for port in ("i_chunk", "i_state", "o_chunk", "o_state", "o_tag")
            for sig in ("valid", "ready", "payload"))
        hold = getattr(dut, f"{self.prefix}hold") if self.prefix else None
        for s in (ic_v, is_v) + ((hold,) if hold is not None else ()):
            s.value = 0
        for s in (oc_r, os_r, ot_r):
            s.value = 1

        exp_chunks, exp_saves, exp_tags = [], [], []
        i = 0
        state_taken = False
        drove_c = drove_s = presenting = False
        rdy = [True, True, True]
        n_out = n_tag = n_save = 0
        n_saves_total = sum(1 for x in sched if x[5])
        cycles = 0
        first_in = last_out = None
        while n_out < len(sched) or n_tag < len(records) or n_save < n_saves_total:
            await RisingEdge(dut.clk)
            cycles += 1
            if cycles > max_cycles:
                raise AssertionError(f"timeout: {n_out}/{len(sched)} chunks out, {n_tag} tags")
            # Handshakes at this edge (values read here are the pre-edge ones).
            if drove_s and int(is_r.value):
                state_taken = True
                drove_s = False
            if drove_c and int(ic_r.value):
                r, kind, d, e, load, save, last = sched[i]
                exp_chunks.append((r, kind, len(d), e))
                if save:
                    exp_saves.append(r)
                if last:
                    exp_tags.append(r)
                if first_in is None:
                    first_in = cycles
                self.taken_at.append(cycles)
                if hold is not None:
                    hold.value = int(not (save or last))
                i += 1
                state_taken = False
                presenting = False
            if rdy[0] and int(oc_v.value):
                v = int(oc_p.value)
                r, kind, cnt, e = exp_chunks[n_out]
                got_cnt, got_kind = _get(fo, v, "count"), _get(fo, v, "kind")
                got = _get(fo, v, "data").to_bytes(16, "little")
                rec = records[r]
                if (got_cnt, got_kind) != (cnt, kind):
                    raise AssertionError(f"record {r} {rec.name}: chunk {n_out} count/kind "
                                         f"{got_cnt}/{got_kind}, expected {cnt}/{kind}")
                if e is not None and got[:cnt] != e:
                    raise AssertionError(f"record {r} {rec.name}: kind {kind} bytes {got[:cnt].hex()}, "
                                         f"expected {e.hex()}")
                if any(got[cnt:]):
                    raise AssertionError(f"record {r}: bytes past count not zero")
                n_out += 1
                last_out = cycles
                if self.first_out is None:
                    self.first_out = cycles
            if rdy[1] and int(os_v.value):
                r = exp_saves[n_save]
                states[r].append(int(os_p.value))
                n_save += 1
            if rdy[2] and int(ot_v.value):
                r = exp_tags[n_tag]
                rec = records[r]
                v = int(ot_p.value)
                ok, computed = _get(ft, v, "ok"), _get(ft, v, "computed")
                tag = _get(ft, v, "tag").to_bytes(16, "little")
                if ok != rec.expect_ok or computed != (rec.seek is None):
                    raise AssertionError(f"record {r} {rec.name}: tag ok={ok} computed={computed}, "
                                         f"expected ok={rec.expect_ok}")
                if rec.expect_tag is not None and tag != rec.expect_tag:
                    raise AssertionError(f"record {r} {rec.name}: tag {tag.hex()} != {rec.expect_tag.hex()}")
                n_tag += 1
                last_out = cycles
            # Drive the next cycle: a chunk, once presented, stays until taken;
            # its state (if it loads one) is presented as soon as it exists.
            if not presenting and i < len(sched) and rng.random() >= self.gap:
                r, kind, d, e, load, save, last = sched[i]
                ic_p.value = _pack(fc, data=int.from_bytes(d.ljust(16, b"\0"), "little"),
                                   count=len(d), kind=kind, load=load, save=save)
                presenting = True
            if presenting and not drove_s:
                r, kind, d, e, load, save, last = sched[i]
                if load and not state_taken and states[r]:
                    is_p.value = states[r].pop(0)
                    drove_s = True
            ic_v.value = int(presenting)
            is_v.value = int(drove_s)
            drove_c = presenting
            if self.bp:
                rdy = [rng.random() >= self.bp for _ in range(3)]
                oc_r.value, os_r.value, ot_r.value = rdy
        self.cycles = cycles
        self.saves = n_saves_total
        self.span = (last_out or cycles) - (first_in or 0)
        self.first_in = first_in
        ic_v.value = 0
        return cycles


# -------------------------------------------------------------------- benchmark

def _bench_records(key_len, size, count, rng, one_key=False):
    # one_key: the records of one connection (one key, a nonce each), as TLS
    # sends them; else every record has a key of its own.
    recs = []
    conn_key = rng.randbytes(key_len)
    for n in range(count):
        key = conn_key if one_key else rng.randbytes(key_len)
        recs.append(Record.make(key, rng.randbytes(12), rng.randbytes(5), rng.randbytes(size),
                                hgen=False, name=f"bench{n}"))
    return recs


async def start_engine(dut):
    """Start the engine top's 8 ns clock and take it through one clock of reset."""
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import RisingEdge
    cocotb.start_soon(Clock(dut.clk, 8, "ns").start())
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    dut.rst.value = 0


async def _bench_body(dut):
    """cocotb side of the benchmark (run by :func:`main` through the cosim runner)."""
    await start_engine(dut)
    rng = random.Random(7)
    out = {"bits_per_clock": {}, "bits_per_clock_key_per_record": {}, "latency_cycles": None}
    sim_cycles = 0
    t0 = time.perf_counter()
    for key_len, name in ((16, "aes128"), (32, "aes256")):
        for one_key, table in ((True, "bits_per_clock"), (False, "bits_per_clock_key_per_record")):
            res = {}
            for size in (16, 256, 1024, 16384):
                count = max(2, min(40, 65536 // size))
                drv = GcmDriver(dut, rng)
                await drv.run(_bench_records(key_len, size, count, rng, one_key))
                sim_cycles += drv.cycles
                # span: first chunk accepted .. last output; steady state per record.
                res[str(size)] = round(8 * size * count / drv.span, 2)
            out[table][name] = res
    # Context switches: the same 8 x 4 KB records (8 connections, a key each),
    # whole vs cut into segments of all 8 records in turn: every segment is a
    # switch to another connection (save one state, load another, a new key).
    # 128 B segments (8 chunks) are shorter than a key's expansion; 1,456 B
    # (91 chunks) is about a TCP segment.
    recs = _bench_records(16, 4096, 8, random.Random(3))
    whole = GcmDriver(dut, random.Random(4), segment=0.0)
    await whole.run(recs)
    sim_cycles += whole.cycles
    out["context_switch"] = []
    for seg_chunks in (8, 91):
        cut = GcmDriver(dut, random.Random(4), segment=seg_chunks, interleave=8)
        await cut.run(recs)
        out["context_switch"].append({
            "records": 8, "record_bytes": 4096, "segment_bytes": 16 * seg_chunks,
            "cycles_whole": whole.span, "cycles_segmented": cut.span,
            "switches": cut.saves,
            "cycles_per_switch": round((cut.span - whole.span) / max(1, cut.saves), 3),
        })
        sim_cycles += cut.cycles
    # Latency: an empty-AAD record's first chunk alone, from accept to output.
    lat = GcmDriver(dut, rng)
    await lat.run(_bench_records(16, 64, 1, rng))
    out["latency_cycles"] = lat.first_out - lat.first_in
    wall = time.perf_counter() - t0
    out["sim_cycles"] = sim_cycles
    out["sim_cycles_per_s"] = round(sim_cycles / wall)
    # The simulator alone, clock free-running (no Python wake-up per cycle).
    from cocotb.triggers import ClockCycles
    t1 = time.perf_counter()
    await ClockCycles(dut.clk, 20000)
    out["sim_cycles_per_s_free"] = round(20000 / (time.perf_counter() - t1))
    Path(os.environ["TLSNIC_BENCH_OUT"]).write_text(json.dumps(out))


def _cocotb_tests():
    try:
        import cocotb
    except ImportError:      # pragma: no cover
        return
    if os.environ.get("TLSNIC_BENCH_OUT"):
        globals()["bench_gcm"] = cocotb.test()(_bench_body)


_cocotb_tests()


def engine_run(**params):
    """The cocotb runner for the engine top (shared with the tests); ``params``
    go to :class:`~tlsnic.hdl.crypto.gcm.GcmEngine` (``aes_cores=4``: the
    board-rate AES)."""
    from tlsnic.cosim.build import Design
    from tlsnic.cosim.runner import CocotbRun
    return CocotbRun(Design("tlsnic.hdl.crypto.gcm:make_engine", "gcm_engine", **params))


def main(argv: list[str]) -> int:
    """``tlsnic bench gcm [--json] [--aes-cores N]``."""
    ap = argparse.ArgumentParser(prog="tlsnic bench gcm", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--aes-cores", type=int, default=0, metavar="N",
                    help="the engine with N iterative AES cores (4: the boards' engine); "
                         "default 0, the unrolled pipeline")
    args = ap.parse_args(argv)
    import tempfile
    run = engine_run(**({"aes_cores": args.aes_cores} if args.aes_cores else {}))
    with tempfile.TemporaryDirectory() as tmp:
        outp = Path(tmp) / "bench.json"
        t0 = time.perf_counter()
        run.test("tlsnic.bench_gcm", test_dir=Path(tmp) / "run",
                 extra_env={"TLSNIC_BENCH_OUT": str(outp)})
        res = json.loads(outp.read_text())
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        res["aes_cores"] = args.aes_cores
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    kind = f"{args.aes_cores} iterative AES cores" if args.aes_cores else "unrolled AES"
    print(f"GCM engine ({kind}), simulated (Verilator); 16-byte chunks, "
          "TLS 1.3 framing (5 B AAD, 16 B tag)")
    for table, what in (("bits_per_clock", "records of one connection (one key)"),
                        ("bits_per_clock_key_per_record", "a new key every record")):
        print(f"bits/clock, {what}:")
        print(f"{'record':>8} " + " ".join(f"{k:>10}" for k in res[table]))
        for size in ("16", "256", "1024", "16384"):
            print(f"{size + ' B':>8} " + " ".join(f"{res[table][k][size]:>10}" for k in res[table]))
    for cs in res["context_switch"]:
        print(f"context switch: {cs['records']} x {cs['record_bytes']} B records in "
              f"{cs['segment_bytes']} B segments, whole {cs['cycles_whole']} cycles, segmented "
              f"{cs['cycles_segmented']} cycles ({cs['switches']} switches, "
              f"{cs['cycles_per_switch']} cycles each)")
    print(f"simulation: {res['sim_cycles_per_s']} cycles/s driven by the Python scoreboard "
          f"({res['sim_cycles']} cycles), {res['sim_cycles_per_s_free']} cycles/s free-running; "
          f"{res['wall_s']} s in all")
    print(f"latency: {res['latency_cycles']} cycles from chunk accepted to chunk out")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
