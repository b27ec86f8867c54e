"""DMA: byte-addressed reads and writes of host memory over an AXI4 manager port.

The engines turn a request ``(addr, length)`` at any byte alignment into INCR
bursts of 64-bit beats and realign the data, so clients see host buffers as a
stream of 64-bit words packed from byte 0. Bursts never cross a 4 KiB boundary
(AXI rule) and are at most ``max_burst`` beats. Both engines use a single AXI
ID: responses return in order, and one request is in flight per engine at a
time. The latency this costs per request (address handshake to first beat) is
small against a frame, and it keeps the realignment logic free of bookkeeping;
descriptor and completion traffic is what pays for it (see the plain bench).

Errors: a read beat answered SLVERR/DECERR flags the whole transfer (its last
word carries ``error``); its data words are still delivered so the client can
drain them. A write answered with an error response flags the status beat.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tlsnic.abi import DESC_BYTES
from .axi import AxiSignature, AxiResp

__all__ = [
    "DmaRequest", "DmaReadWord", "DmaStatus", "DmaReadPort", "DmaWritePort",
    "DmaReader", "DmaWriter", "DmaArbiter",
    "READ_MEMBERS", "WRITE_MEMBERS", "read_entry", "write_entry",
]

BYTES = 8  # beat width in bytes; the datapath is 64 bits throughout



class DmaRequest(data.Struct):
    addr:   64
    length: 16  #: bytes, 1..65535


class DmaReadWord(data.Struct):
    data:  64
    keep:  8    #: contiguous from lane 0; partial only on the last word
    last:  1
    error: 1    #: on the last word: some beat of the transfer failed


class DmaStatus(data.Struct):
    error: 1


class DmaReadPort(wiring.Signature):
    """A client's view of a read engine."""
    def __init__(self):
        super().__init__({
            "req":  Out(stream.Signature(DmaRequest)),
            "resp": In(stream.Signature(DmaReadWord)),
        })


class DmaWritePort(wiring.Signature):
    """A client's view of a write engine: a request, then exactly
    ``ceil(length / 8)`` data words packed from byte 0, then one status beat."""
    def __init__(self):
        super().__init__({
            "req":    Out(stream.Signature(DmaRequest)),
            "data":   Out(stream.Signature(64)),
            "status": In(stream.Signature(DmaStatus)),
        })


READ_MEMBERS = ("arid", "araddr", "arlen", "arsize", "arburst", "arvalid", "arready",
                "rid", "rdata", "rresp", "rlast", "rvalid", "rready")
WRITE_MEMBERS = ("awid", "awaddr", "awlen", "awsize", "awburst", "awvalid", "awready",
                 "wdata", "wstrb", "wlast", "wvalid", "wready",
                 "bid", "bresp", "bvalid", "bready")


def _burst_beats(m, addr, words_left, max_burst):
    """Beats in the next burst from word-aligned ``addr``: at most ``max_burst``,
    never past a 4 KiB boundary, never more than ``words_left``."""
    to_boundary = Signal(range(4096 // BYTES + 1))
    m.d.comb += to_boundary.eq((4096 - addr[:12]) >> 3)
    limit = Signal(range(max(max_burst, 4096 // BYTES) + 1))
    m.d.comb += limit.eq(Mux(to_boundary < max_burst, to_boundary, max_burst))
    beats = Signal.like(limit)
    m.d.comb += beats.eq(Mux(words_left < limit, words_left, limit))
    return beats


def _tail_keep(nbytes):
    """Byte-enable mask of ``nbytes`` (1..8) lanes from lane 0."""
    return Array(Const((1 << n) - 1, 8) for n in range(9))[nbytes]


def read_entry(m, port, addr, entry, start):
    """Fetch the 16-byte ring entry at ``addr`` into ``entry`` over DMA read
    ``port``. Keep ``start`` high until ``done``; returns ``(done, failed)``.
    A failed read leaves ``entry`` zero: nothing of it is trusted."""
    requested = Signal()
    word = Signal()
    m.d.comb += [
        port.req.valid.eq(start & ~requested),
        port.req.payload.addr.eq(addr),
        port.req.payload.length.eq(DESC_BYTES),
        port.resp.ready.eq(start & requested),
    ]
    # The port is shared with the caller's other transfers: only handshakes
    # made while ``start`` is high are ours.
    with m.If(start & port.req.valid & port.req.ready):
        m.d.sync += [requested.eq(1), word.eq(0)]
    done = start & port.resp.valid & port.resp.ready & port.resp.payload.last
    failed = done & port.resp.payload.error
    with m.If(start & port.resp.valid & port.resp.ready):
        m.d.sync += [entry.as_value().word_select(word, 64).eq(port.resp.payload.data),
                     word.eq(1)]
    with m.If(done):
        m.d.sync += requested.eq(0)
        with m.If(port.resp.payload.error):
            m.d.sync += entry.eq(0)
    return done, failed


def write_entry(m, port, addr, entry, start):
    """Drive the write of ``entry`` (a ring entry, a tag log entry: any whole
    number of 64-bit words) on DMA write ``port``; returns ``(done, failed)``:
    the status beat was consumed, and said the write failed. Keep ``start``
    high until ``done``."""
    raw = Value.cast(entry)
    assert len(raw) % 64 == 0
    n_words = len(raw) // 64
    sent_req = Signal()
    words_sent = Signal(range(n_words + 1))
    m.d.comb += [
        port.req.valid.eq(start & ~sent_req),
        port.req.payload.addr.eq(addr),
        port.req.payload.length.eq(n_words * BYTES),
        port.data.valid.eq(start & sent_req & (words_sent != n_words)),
        port.data.payload.eq(raw.word_select(words_sent, 64)),
        port.status.ready.eq(start & (words_sent == n_words)),
    ]
    # The port is shared with the caller's other transfers: only handshakes
    # made while ``start`` is high are ours.
    with m.If(start & port.req.valid & port.req.ready):
        m.d.sync += sent_req.eq(1)
    with m.If(start & port.data.valid & port.data.ready):
        m.d.sync += words_sent.eq(words_sent + 1)
    done = start & port.status.valid & port.status.ready
    with m.If(done):
        m.d.sync += [sent_req.eq(0), words_sent.eq(0)]
    return done, done & port.status.payload.error


class _DmaEngine(wiring.Component):
    """A DMA engine: a client port (``PORT`` signature) and an AXI4 manager.

    Parameters
    ----------
    max_burst : int
        Beats per AXI burst at most (power of two, <= 256).
    """
    PORT = None

    def __init__(self, *, max_burst=32):
        self.max_burst = max_burst
        super().__init__({
            "port": In(self.PORT),
            "axi":  Out(AxiSignature(addr_width=64, data_width=64)),
        })


class DmaReader(_DmaEngine):
    """Reads ``length`` bytes at ``addr`` and streams them packed from byte 0."""
    PORT = DmaReadPort()

    def elaborate(self, platform):
        m = Module()
        req, resp, axi = self.port.req, self.port.resp, self.axi

        offset     = Signal(3)      # addr % 8: realignment shift in bytes
        ar_addr    = Signal(64)     # next burst address (word aligned)
        ar_words   = Signal(14)     # words still to request
        in_words   = Signal(14)     # input beats still to come
        out_words  = Signal(14)     # output words still to emit
        tail_bytes = Signal(4)      # bytes in the last output word, 1..8
        prev       = Signal(64)     # previous input beat, for realignment
        error      = Signal()
        busy       = Signal()
        seen_first = Signal()       # the first input beat has arrived
        flush      = Signal()       # last output word comes from ``prev`` alone

        # Request: latch, compute word counts.
        m.d.comb += req.ready.eq(~busy)
        with m.If(req.valid & req.ready):
            p = req.payload
            first_off = p.addr[:3]
            m.d.sync += [
                busy.eq(1),
                offset.eq(first_off),
                ar_addr.eq(Cat(C(0, 3), p.addr[3:])),
                ar_words.eq((first_off + p.length + 7) >> 3),
                in_words.eq((first_off + p.length + 7) >> 3),
                out_words.eq((p.length + 7) >> 3),
                tail_bytes.eq(((p.length - 1) & 7) + 1),
                error.eq(0),
                seen_first.eq(0),
                flush.eq(0),
            ]

        # AR channel: bursts back to back; R data is throttled on its own side.
        beats = _burst_beats(m, ar_addr, ar_words, self.max_burst)
        m.d.comb += [
            axi.arid.eq(0), axi.araddr.eq(ar_addr), axi.arlen.eq(beats - 1),
            axi.arsize.eq(3), axi.arburst.eq(0b01),
            axi.arvalid.eq(busy & (ar_words != 0)),
        ]
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [ar_addr.eq(ar_addr + (beats << 3)), ar_words.eq(ar_words - beats)]

        # R channel and realignment into a registered output word.
        out_free = ~resp.valid | resp.ready
        with m.If(resp.valid & resp.ready):
            m.d.sync += resp.valid.eq(0)
            with m.If(resp.payload.last):
                m.d.sync += busy.eq(0)

        def emit(word, last):
            m.d.sync += [
                resp.valid.eq(1),
                resp.payload.data.eq(word),
                resp.payload.last.eq(last),
                resp.payload.keep.eq(Mux(last, _tail_keep(tail_bytes), 0xff)),
                out_words.eq(out_words - 1),
            ]

        beat_error = axi.rresp[1]   # SLVERR or DECERR
        m.d.comb += axi.rready.eq(busy & (in_words != 0) & ~flush & out_free)
        with m.If(axi.rvalid & axi.rready):
            m.d.sync += [prev.eq(axi.rdata), in_words.eq(in_words - 1), seen_first.eq(1)]
            err = error | beat_error
            m.d.sync += [error.eq(err), resp.payload.error.eq(err)]
            with m.If(offset == 0):
                emit(axi.rdata, out_words == 1)
            with m.Else():
                # Output word j is bytes off.. of input beats j and j+1: nothing
                # comes out of the first beat alone.
                with m.If(seen_first):
                    emit(Cat(prev, axi.rdata).bit_select(offset * 8, 64), out_words == 1)
                # When the data ends inside the final input beat, the last
                # output word needs no further beat: flush it from ``prev``.
                left_after = Mux(seen_first, out_words - 1, out_words)
                with m.If((in_words == 1) & (left_after != 0)):
                    m.d.sync += flush.eq(1)
        with m.If(flush & out_free):
            m.d.sync += flush.eq(0)
            emit(Cat(prev, C(0, 64)).bit_select(offset * 8, 64), 1)
        return m


class DmaWriter(_DmaEngine):
    """Writes ``length`` bytes at ``addr`` from a stream of words packed from byte 0."""
    PORT = DmaWritePort()

    def elaborate(self, platform):
        m = Module()
        req, din, status, axi = self.port.req, self.port.data, self.port.status, self.axi

        offset    = Signal(3)
        start     = Signal(64)     # first byte address
        end       = Signal(65)     # one past the last byte address
        aw_addr   = Signal(64)
        aw_words  = Signal(14)
        w_addr    = Signal(64)     # address of the current W beat (word aligned)
        w_words   = Signal(14)     # W beats still to send
        in_words  = Signal(14)     # input words still to take
        burst_left = Signal(9)     # W beats left in the current burst; 0 = new burst
        bursts_out = Signal(14)    # bursts whose B response is outstanding
        prev      = Signal(64)
        error     = Signal()
        busy      = Signal()

        m.d.comb += req.ready.eq(~busy & ~status.valid)
        with m.If(req.valid & req.ready):
            p = req.payload
            words = (p.addr[:3] + p.length + 7) >> 3
            m.d.sync += [
                busy.eq(1), offset.eq(p.addr[:3]), start.eq(p.addr), end.eq(p.addr + p.length),
                aw_addr.eq(Cat(C(0, 3), p.addr[3:])), aw_words.eq(words),
                w_addr.eq(Cat(C(0, 3), p.addr[3:])), w_words.eq(words),
                in_words.eq((p.length + 7) >> 3), burst_left.eq(0), bursts_out.eq(0),
                prev.eq(0), error.eq(0),
            ]

        # AW channel.
        aw_beats = _burst_beats(m, aw_addr, aw_words, self.max_burst)
        m.d.comb += [
            axi.awid.eq(0), axi.awaddr.eq(aw_addr), axi.awlen.eq(aw_beats - 1),
            axi.awsize.eq(3), axi.awburst.eq(0b01),
            axi.awvalid.eq(busy & (aw_words != 0)),
        ]
        aw_fire = axi.awvalid & axi.awready
        with m.If(aw_fire):
            m.d.sync += [aw_addr.eq(aw_addr + (aw_beats << 3)), aw_words.eq(aw_words - aw_beats)]

        # W channel: the same burst split, recomputed on this side so wlast needs
        # no queue between the channels.
        w_beats = _burst_beats(m, w_addr, w_words, self.max_burst)
        beats_left = Mux(burst_left == 0, w_beats, burst_left)
        need_input = in_words != 0
        m.d.comb += [
            axi.wdata.eq(Cat(prev, din.payload).bit_select((C(8, 4) - offset).as_unsigned() * 8, 64)),
            axi.wlast.eq(beats_left == 1),
            axi.wvalid.eq(busy & (w_words != 0) & (din.valid | ~need_input)),
            din.ready.eq(busy & (w_words != 0) & need_input & axi.wready),
        ]
        for lane in range(BYTES):
            byte_addr = w_addr + lane
            m.d.comb += axi.wstrb[lane].eq((byte_addr >= start) & (byte_addr < end))
        with m.If(axi.wvalid & axi.wready):
            m.d.sync += [
                w_addr.eq(w_addr + BYTES), w_words.eq(w_words - 1),
                burst_left.eq(beats_left - 1),
            ]
            with m.If(need_input):
                m.d.sync += [prev.eq(din.payload), in_words.eq(in_words - 1)]

        # B channel.
        m.d.comb += axi.bready.eq(busy)
        b_fire = axi.bvalid & axi.bready
        m.d.sync += bursts_out.eq(bursts_out + aw_fire - b_fire)
        with m.If(b_fire & axi.bresp[1]):
            m.d.sync += error.eq(1)

        # Done once every burst is answered.
        all_answered = (aw_words == 0) & (w_words == 0) & (bursts_out == b_fire) & ~aw_fire
        with m.If(busy & all_answered & (b_fire | (bursts_out == 0))):
            m.d.sync += [
                busy.eq(0), status.valid.eq(1),
                status.payload.error.eq(error | (b_fire & axi.bresp[1])),
            ]
        with m.If(status.valid & status.ready):
            m.d.sync += status.valid.eq(0)
        return m


def _round_robin(m, requests):
    """Grant one of ``requests`` (round robin after the last grant); the grant is
    ``held`` until the caller clears it. Returns ``(grant, held)``."""
    n = len(requests)
    grant = Signal(range(max(n, 2)))
    held = Signal()
    pending = Cat(requests)
    with m.If(~held):
        # The highest-priority candidate is checked last, so it wins.
        for k in reversed(range(1, n + 1)):
            cand = (grant + k) % n if n > 1 else C(0)
            with m.If(pending.bit_select(cand, 1)):
                m.d.sync += [grant.eq(cand), held.eq(1)]
    return grant, held


class DmaArbiter(wiring.Component):
    """Shares one DMA engine among ``n`` clients, round robin. A grant lasts
    from a client's request to the end of its transfer: the last read word, or
    the write status beat. Every stream of the port is muxed the same way.

    Parameters
    ----------
    signature : DmaReadPort or DmaWritePort
    n : int
    """
    def __init__(self, signature, n):
        self.n = n
        self._end = "resp" if "resp" in signature.members else "status"
        super().__init__({
            "clients": In(signature).array(n),
            "engine":  Out(signature),
        })

    def elaborate(self, platform):
        m = Module()
        grant, held = _round_robin(m, [c.req.valid for c in self.clients])
        sel = Array(self.clients)[grant]
        for name, member in self.engine.signature.members.items():
            ours, theirs = getattr(self.engine, name), getattr(sel, name)
            if member.flow == Out:      # client -> engine
                m.d.comb += [ours.valid.eq(held & theirs.valid), ours.payload.eq(theirs.payload),
                             theirs.ready.eq(held & ours.ready)]
            else:                       # engine -> client
                m.d.comb += [theirs.valid.eq(held & ours.valid), theirs.payload.eq(ours.payload),
                             ours.ready.eq(held & theirs.ready)]
        end = getattr(self.engine, self._end)
        finished = end.valid & end.ready
        if self._end == "resp":
            finished &= end.payload.last
        with m.If(finished):
            m.d.sync += held.eq(0)
        return m
