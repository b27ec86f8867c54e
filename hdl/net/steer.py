"""Flow steering for TLS receive: flow key -> receive tag, two-choice buckets.

The policy is the ABI's ("TLS receive", *Steering*, in :mod:`tlsnic.abi`):
``rx_contexts // 2`` buckets of :data:`~tlsnic.abi.STEER_WAYS` ways, each way a
32-bit fingerprint ``h = flow_hash(key)`` and a tag; a flow may sit in bucket
``h % buckets`` or ``(h >> 16) % buckets``. Insert answers STEER_EXISTS when
the fingerprint is already in either bucket, else takes the lowest free way of
the bucket with fewer used ways (the first on a tie), or answers STEER_FULL.
Remove clears the way that holds the fingerprint and the tag. A lookup names
the one way whose fingerprint matches (the insert rule keeps fingerprints
unique), or misses; checking the frame's key against the context's stored key
is the caller's job, since the keys live in the context table.

Why it is built this way
------------------------
* The fingerprint is CRC-32 as :func:`zlib.crc32` computes it. For a message
  of fixed length (a flow key is always :data:`~tlsnic.abi.FLOW_KEY_BYTES`)
  CRC-32 is affine over GF(2): ``crc(k) = A k ^ crc(0)``. :func:`crc_matrix`
  derives ``A`` column by column from ``zlib.crc32`` itself, so the gateware
  cannot drift from the reference; each output bit is an XOR of ~150 key bits,
  registered once.
* A bucket is one memory row holding all its ways, so a bucket costs one read.
  The two buckets are read one after the other through a single read port (one
  lookup per frame is all the receive path needs, and the frame waits in the
  packet FIFO anyway), which keeps the table in one block RAM per 36 bits of
  row width rather than two copies.
* ``h % buckets`` is a bit slice when ``buckets`` is a power of two (every
  card we build); other sizes use a restoring division, two quotient bits per
  clock (16 clocks), both indices at once.
* Block RAM is not cleared by a reset, and a stale way would make an insert
  answer STEER_EXISTS or STEER_FULL for no reason: after reset the table
  scrubs itself (one row per clock) before it answers anything.

One operation is inside at a time; updates go before lookups when both wait.
"""

import zlib

from amaranth import *
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from tlsnic.abi import FLOW_KEY_BYTES, STEER_WAYS

__all__ = ["FlowKey", "SteerOp", "SteerAnswer", "SteerUpdate", "SteerResult", "SteerTable",
           "crc_matrix", "crc32_fixed", "flow_key_of", "bucket_choices"]

KEY_BITS = FLOW_KEY_BYTES * 8


class FlowKey(data.Struct):
    """A :func:`tlsnic.abi.flow_key` as bits: byte ``i`` of the key in bits ``8i..8i+7``."""
    port:       8
    ip_version: 8       #: 4 or 6
    src_addr:   128     #: address bytes in wire order, IPv4 in bytes 0..3 (rest zero)
    dst_addr:   128
    src_port:   16      #: big-endian: the high byte in bits 0..7
    dst_port:   16


def flow_key_of(m, port, ipv6, src_addr, dst_addr, src_port, dst_port):
    """A :class:`FlowKey` from parsed fields (ports as 16-bit integers,
    addresses in wire byte order as in :class:`~.tcp_parse.TcpInfo`)."""
    key = Signal(FlowKey)
    m.d.comb += [
        key.port.eq(port), key.ip_version.eq(Mux(ipv6, 6, 4)),
        key.src_addr.eq(Mux(ipv6, src_addr, src_addr[:32])),
        key.dst_addr.eq(Mux(ipv6, dst_addr, dst_addr[:32])),
        key.src_port.eq(Cat(src_port[8:16], src_port[0:8])),
        key.dst_port.eq(Cat(dst_port[8:16], dst_port[0:8])),
    ]
    return key


def crc_matrix(nbytes=FLOW_KEY_BYTES):
    """``(columns, constant)`` of CRC-32 over ``nbytes``-byte messages:
    ``zlib.crc32(msg) == constant ^ XOR(columns[i] for each set bit i)``, bit
    ``i`` being bit ``i % 8`` of byte ``i // 8``."""
    zero = bytes(nbytes)
    constant = zlib.crc32(zero)
    columns = []
    for i in range(nbytes * 8):
        msg = bytearray(nbytes)
        msg[i // 8] = 1 << (i % 8)
        columns.append(zlib.crc32(bytes(msg)) ^ constant)
    return columns, constant


def crc32_fixed(value, nbytes=FLOW_KEY_BYTES):
    """CRC-32 of the ``nbytes``-byte message ``value`` (bits as in
    :func:`crc_matrix`) as an Amaranth expression: one XOR tree per bit."""
    columns, constant = crc_matrix(nbytes)
    value = Value.cast(value)
    bits = []
    for j in range(32):
        taps = [value[i] for i, col in enumerate(columns) if (col >> j) & 1]
        bit = Cat(*taps).xor() if taps else C(0, 1)
        bits.append(bit ^ ((constant >> j) & 1))
    return Cat(*bits)


def bucket_choices(h, buckets):
    """The two buckets a fingerprint may sit in (Python, for references and tests)."""
    return h % buckets, (h >> 16) % buckets


class SteerOp(enum.Enum, shape=1):
    INSERT = 0
    REMOVE = 1


class SteerAnswer(enum.Enum, shape=2):
    OK      = 0
    EXISTS  = 1     #: insert: the fingerprint is in one of its buckets already
    FULL    = 2     #: insert: both buckets have every way in use
    MISSING = 3     #: remove: no way holds this fingerprint and tag


class SteerUpdate(data.Struct):
    op:  SteerOp
    key: FlowKey
    tag: 16


class SteerResult(data.Struct):
    hit: 1
    tag: 16         #: the candidate context (0 on a miss)


class SteerTable(wiring.Component):
    """The steering table.

    Parameters
    ----------
    contexts : int
        Receive contexts (tags ``1..contexts``); the table has ``contexts // 2``
        buckets.

    Members
    -------
    lookup : In(stream.Signature(FlowKey))
        A frame's flow key.
    result : Out(stream.Signature(SteerResult))
        One beat per lookup.
    update : In(stream.Signature(SteerUpdate))
        Insert or remove a rule.
    answer : Out(stream.Signature(SteerAnswer))
        One beat per update.
    busy : Out(1)
        Scrubbing after reset (nothing is answered meanwhile).
    """
    def __init__(self, *, contexts=256):
        assert contexts >= 2
        self.contexts = contexts
        self.buckets = contexts // 2
        self.tag_bits = (contexts).bit_length()
        self.way_layout = data.StructLayout({"valid": 1, "fp": 32, "tag": self.tag_bits})
        super().__init__({
            "lookup": In(stream.Signature(FlowKey)),
            "result": Out(stream.Signature(SteerResult)),
            "update": In(stream.Signature(SteerUpdate)),
            "answer": Out(stream.Signature(SteerAnswer)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        nb = self.buckets
        row_layout = data.ArrayLayout(self.way_layout, STEER_WAYS)
        m.submodules.rows = rows = Memory(shape=row_layout, depth=nb, init=[])
        rd, wr = rows.read_port(), rows.write_port()
        index_bits = max(1, (nb - 1).bit_length())

        is_update = Signal()
        op = Signal(SteerOp)
        key = Signal(FlowKey)
        tag = Signal(16)
        h = Signal(32)
        b0 = Signal(index_bits)
        b1 = Signal(index_bits)
        row0 = Signal(row_layout)
        row1 = Signal(row_layout)
        scrub = Signal(range(nb + 1))

        # Way matches, used counts, the way an insert takes.
        def matches(row, with_tag):
            return Cat(*[row[w].valid & (row[w].fp == h)
                         & ((row[w].tag == tag) if with_tag else 1) for w in range(STEER_WAYS)])
        fp0, fp1 = matches(row0, False), matches(row1, False)
        own0, own1 = matches(row0, True), matches(row1, True)
        used0 = sum(row0[w].valid for w in range(STEER_WAYS))
        used1 = sum(row1[w].valid for w in range(STEER_WAYS))
        first_bucket = Signal()
        m.d.comb += first_bucket.eq(used0 <= used1)
        chosen = Signal(row_layout)
        m.d.comb += chosen.eq(Mux(first_bucket, row0, row1))
        free_way = Signal(range(STEER_WAYS))
        for w in reversed(range(STEER_WAYS)):
            with m.If(~chosen[w].valid):
                m.d.comb += free_way.eq(w)
        full = Cat(*[chosen[w].valid for w in range(STEER_WAYS)]).all()

        def hit_tag(row, hits):
            out = Signal(self.tag_bits)
            for w in reversed(range(STEER_WAYS)):
                with m.If(hits[w]):
                    m.d.comb += out.eq(row[w].tag)
            return out
        tag0, tag1 = hit_tag(row0, fp0), hit_tag(row1, fp1)

        result = Signal(SteerResult)
        answer = Signal(SteerAnswer)
        m.d.comb += [self.result.payload.eq(result), self.answer.payload.eq(answer)]

        # The division for a bucket count that is not a power of two.
        power_of_two = nb & (nb - 1) == 0
        div_step = Signal(range(17))
        r0 = Signal(index_bits + 2)
        r1 = Signal(index_bits + 2)

        def reduce_step(r, bits):
            # Two quotient bits of a restoring division by ``nb``.
            for b in bits:
                r = Cat(b, r)
                r = Mux(r >= nb, r - nb, r)
            return r

        with m.FSM(init="SCRUB"):
            with m.State("SCRUB"):
                m.d.comb += [self.busy.eq(1), wr.addr.eq(scrub), wr.data.eq(0), wr.en.eq(1)]
                m.d.sync += scrub.eq(scrub + 1)
                with m.If(scrub == nb - 1):
                    m.next = "IDLE"
            with m.State("IDLE"):
                with m.If(self.update.valid):
                    m.d.comb += self.update.ready.eq(1)
                    m.d.sync += [is_update.eq(1), op.eq(self.update.payload.op),
                                 key.eq(self.update.payload.key), tag.eq(self.update.payload.tag)]
                    m.next = "HASH"
                with m.Elif(self.lookup.valid):
                    m.d.comb += self.lookup.ready.eq(1)
                    m.d.sync += [is_update.eq(0), key.eq(self.lookup.payload), tag.eq(0)]
                    m.next = "HASH"
            with m.State("HASH"):
                hv = crc32_fixed(key)
                m.d.sync += h.eq(hv)
                if power_of_two:
                    m.d.sync += [b0.eq(hv[:index_bits] if nb > 1 else 0),
                                 b1.eq(hv[16:16 + index_bits] if nb > 1 else 0)]
                    m.next = "READ0"
                else:
                    m.d.sync += [r0.eq(0), r1.eq(0), div_step.eq(0)]
                    m.next = "DIVIDE"
            if not power_of_two:
                with m.State("DIVIDE"):
                    # h from the top, two bits per clock; h >> 16 is the top half of h.
                    hi = h.word_select((15 - div_step[:4])[:4], 2)
                    lo_bits = [hi[1], hi[0]]
                    m.d.sync += [r0.eq(reduce_step(r0, lo_bits)), div_step.eq(div_step + 1)]
                    with m.If(div_step < 8):
                        m.d.sync += r1.eq(reduce_step(r1, lo_bits))
                    with m.If(div_step == 15):
                        m.next = "DIVIDED"
                with m.State("DIVIDED"):
                    m.d.sync += [b0.eq(r0), b1.eq(r1)]
                    m.next = "READ0"
            with m.State("READ0"):
                m.d.comb += rd.addr.eq(b0)
                m.next = "READ1"
            with m.State("READ1"):
                m.d.comb += rd.addr.eq(b1)
                m.d.sync += row0.eq(rd.data)
                m.next = "ROW1"
            with m.State("ROW1"):
                m.d.sync += row1.eq(rd.data)
                m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(~is_update):
                    m.d.sync += [result.hit.eq(fp0.any() | fp1.any()),
                                 result.tag.eq(Mux(fp0.any(), tag0, Mux(fp1.any(), tag1, 0)))]
                    m.next = "RESULT"
                with m.Elif(op == SteerOp.INSERT):
                    with m.If(fp0.any() | fp1.any()):
                        m.d.sync += answer.eq(SteerAnswer.EXISTS)
                    with m.Elif(full):
                        m.d.sync += answer.eq(SteerAnswer.FULL)
                    with m.Else():
                        new_row = Signal(row_layout)
                        m.d.comb += [new_row.eq(chosen),
                                     wr.addr.eq(Mux(first_bucket, b0, b1)), wr.data.eq(new_row),
                                     wr.en.eq(1)]
                        for w in range(STEER_WAYS):
                            with m.If(free_way == w):
                                m.d.comb += [new_row[w].valid.eq(1), new_row[w].fp.eq(h),
                                             new_row[w].tag.eq(tag)]
                        m.d.sync += answer.eq(SteerAnswer.OK)
                    m.next = "ANSWER"
                with m.Else():
                    # Remove: the way in the first bucket that holds it (the two
                    # buckets may be one row: clearing it once is enough).
                    new_row = Signal(row_layout)
                    own = Mux(own0.any(), own0, own1)
                    m.d.comb += [new_row.eq(Mux(own0.any(), row0, row1)),
                                 wr.addr.eq(Mux(own0.any(), b0, b1)), wr.data.eq(new_row),
                                 wr.en.eq(own0.any() | own1.any())]
                    for w in range(STEER_WAYS):
                        with m.If(own[w]):
                            m.d.comb += new_row[w].eq(0)
                    m.d.sync += answer.eq(Mux(own0.any() | own1.any(), SteerAnswer.OK,
                                              SteerAnswer.MISSING))
                    m.next = "ANSWER"
            with m.State("RESULT"):
                m.d.comb += self.result.valid.eq(1)
                with m.If(self.result.ready):
                    m.next = "IDLE"
            with m.State("ANSWER"):
                m.d.comb += self.answer.valid.eq(1)
                with m.If(self.answer.ready):
                    m.next = "IDLE"
        return m
