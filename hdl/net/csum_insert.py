"""TX output: frames from the packet FIFO to the wire, checksums written in.

The checksum fields sit at even byte offsets, so each is the two bytes of one
16-bit lane pair inside a single 64-bit word: patching is a byte-lane mux on
the word whose index matches, with no extra latency.
"""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from tlsnic.abi import TxFlags
from ..host.tx_engine import TxFrameMeta
from .frame import FrameWord, WORD_BYTES, keep_count

__all__ = ["ChecksumInsert"]


class ChecksumInsert(wiring.Component):
    """Streams each frame to its port, patched, or discards it if ``drop``.

    Members
    -------
    frames, meta : In
        From :class:`hdl.host.tx_engine.TxEngine`.
    ports : Out(stream.Signature(FrameWord)).array(n)
    sent, sent_bytes, csum_ip, csum_l4 : Out
        Per-frame strobes for the statistics counters (with the byte count).
    """
    def __init__(self, *, ports=1):
        self.n = ports
        super().__init__({
            "frames": In(stream.Signature(FrameWord)),
            "meta": In(stream.Signature(TxFrameMeta)),
            "ports": Out(stream.Signature(FrameWord)).array(ports),
            "sent": Out(1), "sent_bytes": Out(16), "csum_ip": Out(1), "csum_l4": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        meta = self.meta.payload
        word = self.frames.payload
        index = Signal(range(8192 // WORD_BYTES * 2))
        active = self.meta.valid  # the head frame's metadata: its words are all in the FIFO

        patch_ip = meta.csum.ip_ok & (meta.flags & TxFlags.CSUM_IP).as_value().any()
        patch_l4 = meta.csum.l4_ok & (meta.flags & TxFlags.CSUM_L4).as_value().any()
        out = Signal(FrameWord)
        m.d.comb += out.eq(word)
        for patch, field, value in ((patch_ip, meta.csum.ip_field, meta.csum.ip_value),
                                    (patch_l4, meta.csum.l4_field, meta.csum.l4_value)):
            with m.If(patch & (index == (field >> 3))):
                lane = field[:3]
                for k in range(WORD_BYTES):
                    with m.If(lane == k):
                        m.d.comb += out.data.word_select(k, 8).eq(value[8:])
                    with m.If(lane + 1 == k):
                        m.d.comb += out.data.word_select(k, 8).eq(value[:8])

        port_ready = Array(p.ready for p in self.ports)[meta.port]
        for i, port in enumerate(self.ports):
            m.d.comb += [
                port.payload.eq(out),
                port.valid.eq(active & self.frames.valid & ~meta.drop & (meta.port == i)),
            ]
        take = active & self.frames.valid & (meta.drop | port_ready)
        m.d.comb += self.frames.ready.eq(take)
        with m.If(take):
            m.d.sync += index.eq(index + 1)
            with m.If(word.last):
                m.d.sync += index.eq(0)
                m.d.comb += [
                    self.meta.ready.eq(1),
                    self.sent.eq(~meta.drop),
                    self.sent_bytes.eq(Mux(meta.drop, 0, meta.csum.length)),
                    self.csum_ip.eq(~meta.drop & patch_ip),
                    self.csum_l4.eq(~meta.drop & patch_l4),
                ]
        return m
