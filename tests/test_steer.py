"""``hdl/net/steer.py`` (amaranth.sim) against a Python reference of the ABI's
steering policy: random traffic, crafted bucket collisions, fingerprint
collisions, remove and reinsert, a bucket count that is not a power of two."""

import random
import zlib

import pytest
from amaranth import Const
from amaranth.sim import Simulator

from tlsnic.abi import STEER_WAYS, flow_hash, flow_key
from tlsnic.hdl.net.steer import (FlowKey, SteerAnswer, SteerOp, SteerTable, bucket_choices,
                                  crc_matrix)


class SteerReference:
    """The ABI's policy, written as plainly as possible."""
    def __init__(self, contexts):
        self.buckets = contexts // 2
        self.rows = [[None] * STEER_WAYS for _ in range(self.buckets)]     # (fp, tag) or None

    def lookup(self, key):
        h = flow_hash(key)
        for b in bucket_choices(h, self.buckets):
            for way in self.rows[b]:
                if way and way[0] == h:
                    return way[1]
        return 0

    def insert(self, key, tag):
        h = flow_hash(key)
        b0, b1 = bucket_choices(h, self.buckets)
        if any(w and w[0] == h for b in (b0, b1) for w in self.rows[b]):
            return SteerAnswer.EXISTS
        used = [sum(w is not None for w in self.rows[b]) for b in (b0, b1)]
        b = b0 if used[0] <= used[1] else b1
        if None not in self.rows[b]:
            return SteerAnswer.FULL
        self.rows[b][self.rows[b].index(None)] = (h, tag)
        return SteerAnswer.OK

    def remove(self, key, tag):
        h = flow_hash(key)
        for b in bucket_choices(h, self.buckets):
            for i, w in enumerate(self.rows[b]):
                if w == (h, tag):
                    self.rows[b][i] = None
                    return SteerAnswer.OK
        return SteerAnswer.MISSING


def _random_key(rng):
    v6 = rng.random() < 0.4
    n = 16 if v6 else 4
    return flow_key(rng.randrange(4), 6 if v6 else 4, rng.randbytes(n), rng.randbytes(n),
                    rng.randrange(65536), rng.randrange(65536))


def _key_value(key):
    return int.from_bytes(key, "little")


def test_crc_matrix_is_zlib():
    rng = random.Random(3)
    columns, constant = crc_matrix()
    for _ in range(200):
        key = _random_key(rng)
        v = _key_value(key)
        h = constant
        for i, col in enumerate(columns):
            if (v >> i) & 1:
                h ^= col
        assert h == zlib.crc32(key) == flow_hash(key)


def test_flow_key_layout_is_the_abi_key():
    # FlowKey fields sit where flow_key() puts their bytes.
    key = flow_key(2, 6, bytes(range(16)), bytes(range(16, 32)), 0x1234, 0xABCD)
    c = Const.cast(FlowKey.const({"port": 2, "ip_version": 6,
                                  "src_addr": int.from_bytes(bytes(range(16)), "little"),
                                  "dst_addr": int.from_bytes(bytes(range(16, 32)), "little"),
                                  "src_port": 0x3412, "dst_port": 0xCDAB}))
    assert c.value == _key_value(key)


def _run_ops(contexts, ops):
    """Run ``ops`` (("lookup", key) | ("insert", key, tag) | ("remove", key, tag))
    on the gateware; return the answers (tags for lookups, SteerAnswer else)."""
    dut = SteerTable(contexts=contexts)
    answers = []

    async def bench(ctx):
        while ctx.get(dut.busy):
            await ctx.tick()
        for op in ops:
            if op[0] == "lookup":
                ctx.set(dut.lookup.valid, 1)
                ctx.set(dut.lookup.payload.as_value(), _key_value(op[1]))
                await ctx.tick().until(dut.lookup.ready)
                ctx.set(dut.lookup.valid, 0)
                ctx.set(dut.result.ready, 1)
                payload, = await ctx.tick().sample(dut.result.payload).until(dut.result.valid)
                ctx.set(dut.result.ready, 0)
                answers.append(payload.tag if payload.hit else 0)
            else:
                ctx.set(dut.update.valid, 1)
                ctx.set(dut.update.payload.op,
                        SteerOp.INSERT if op[0] == "insert" else SteerOp.REMOVE)
                ctx.set(dut.update.payload.key.as_value(), _key_value(op[1]))
                ctx.set(dut.update.payload.tag, op[2])
                await ctx.tick().until(dut.update.ready)
                ctx.set(dut.update.valid, 0)
                ctx.set(dut.answer.ready, 1)
                payload, = await ctx.tick().sample(dut.answer.payload).until(dut.answer.valid)
                ctx.set(dut.answer.ready, 0)
                answers.append(SteerAnswer(payload))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return answers


def _reference(contexts, ops):
    ref = SteerReference(contexts)
    out = []
    for op in ops:
        if op[0] == "lookup":
            out.append(ref.lookup(op[1]))
        elif op[0] == "insert":
            out.append(ref.insert(op[1], op[2]))
        else:
            out.append(ref.remove(op[1], op[2]))
    return out


def _random_ops(rng, contexts, n):
    keys = [_random_key(rng) for _ in range(contexts + contexts // 2)]
    live = {}
    ops = []
    for _ in range(n):
        r = rng.random()
        if r < 0.35:
            key = rng.choice(keys)
            tag = rng.randrange(1, contexts + 1)
            ops.append(("insert", key, tag))
            live.setdefault(key, tag)
        elif r < 0.5 and live:
            key = rng.choice(sorted(live))
            ops.append(("remove", key, live.pop(key)))
        elif r < 0.55:
            ops.append(("remove", rng.choice(keys), rng.randrange(1, contexts + 1)))
        else:
            ops.append(("lookup", rng.choice(keys)))
    return ops


@pytest.mark.parametrize("contexts", [256, 12, 2])
def test_random_against_reference(contexts):
    rng = random.Random(contexts)
    ops = _random_ops(rng, contexts, 400 if contexts > 2 else 60)
    want = _reference(contexts, ops)
    assert _run_ops(contexts, ops) == want
    # The run must exercise every answer the table can give.
    answers = {a for a in want if isinstance(a, SteerAnswer)}
    assert {SteerAnswer.OK, SteerAnswer.MISSING} <= answers
    if contexts > 2:
        assert any(isinstance(a, int) and a for a in want)


def _colliding_keys(contexts, count, seed=5):
    """``count`` keys whose fingerprints all choose the same two buckets."""
    rng = random.Random(seed)
    buckets = contexts // 2
    target = None
    found = []
    while len(found) < count:
        key = _random_key(rng)
        choice = set(bucket_choices(flow_hash(key), buckets))
        if len(choice) != 2:
            continue
        if target is None:
            target = choice
        if choice == target:
            found.append(key)
    return found


@pytest.mark.parametrize("contexts", [256, 12])
def test_full_buckets_remove_reinsert(contexts):
    keys = _colliding_keys(contexts, 2 * STEER_WAYS + 2)
    ta, tb = contexts - 1, contexts          # tags the table can hold, unused so far
    ops = []
    for tag, key in enumerate(keys, 1):
        ops.append(("insert", key, tag))           # the last two: STEER_FULL
    ops += [("lookup", key) for key in keys]
    ops += [("remove", keys[3], 4), ("remove", keys[3], 4),       # second: MISSING
            ("insert", keys[-1], ta), ("lookup", keys[-1]), ("lookup", keys[3]),
            ("insert", keys[-2], tb),                              # full again
            ("remove", keys[0], ta),                               # wrong tag: MISSING
            ("remove", keys[0], 1), ("insert", keys[-2], tb), ("lookup", keys[-2])]
    want = _reference(contexts, ops)
    assert want[:2 * STEER_WAYS] == [SteerAnswer.OK] * (2 * STEER_WAYS)
    assert want[2 * STEER_WAYS:2 * STEER_WAYS + 2] == [SteerAnswer.FULL] * 2
    assert want[-1] == tb
    assert _run_ops(contexts, ops) == want


def _fingerprint_twin(key):
    """Another key (same port and IP version) with the same CRC-32: a kernel
    vector of the CRC matrix restricted to the address and port bits."""
    columns, _ = crc_matrix()
    # Gaussian elimination over GF(2) on columns 16.. (addresses, ports).
    basis = {}      # pivot bit -> (value, combination of key bits)
    for i in range(16, len(columns)):
        v, comb = columns[i], 1 << i
        for bit in sorted(basis, reverse=True):
            if (v >> bit) & 1:
                bv, bc = basis[bit]
                v, comb = v ^ bv, comb ^ bc
        if v == 0:
            twin = _key_value(key) ^ comb
            return twin.to_bytes(len(key), "little")
        basis[v.bit_length() - 1] = (v, comb)
    raise AssertionError("no kernel vector")


def test_fingerprint_collision_is_exists():
    rng = random.Random(9)
    key = _random_key(rng)
    twin = _fingerprint_twin(key)
    assert twin != key and flow_hash(twin) == flow_hash(key)
    ops = [("insert", key, 5), ("insert", twin, 6), ("lookup", twin), ("remove", twin, 6),
           ("remove", key, 5), ("insert", twin, 6), ("lookup", key)]
    want = _reference(256, ops)
    assert want == [SteerAnswer.OK, SteerAnswer.EXISTS, 5, SteerAnswer.MISSING,
                    SteerAnswer.OK, SteerAnswer.OK, 6]
    assert _run_ops(256, ops) == want


@pytest.mark.parametrize("contexts", [16, 12])
def test_tie_takes_the_first_bucket(contexts):
    """A flow with buckets (p, q) on a tie goes to p: then only three flows
    whose both choices are p still fit there."""
    rng = random.Random(contexts)
    buckets = contexts // 2
    first = None
    same = []
    while first is None or len(same) < STEER_WAYS:
        key = _random_key(rng)
        b0, b1 = bucket_choices(flow_hash(key), buckets)
        if first is None and b0 != b1:
            first = (key, b0)
        elif first is not None and b0 == b1 == first[1]:
            same.append(key)
    ops = [("insert", first[0], 1)] + [("insert", k, t) for t, k in enumerate(same, 2)]
    want = _reference(contexts, ops)
    assert want == [SteerAnswer.OK] * STEER_WAYS + [SteerAnswer.FULL]
    assert _run_ops(contexts, ops) == want
