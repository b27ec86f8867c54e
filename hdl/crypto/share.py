"""One GCM engine for two users: the TLS transmit and receive engines of a board.

Why share
---------
A full-rate :class:`~.gcm.GcmEngine` is 114 EBR and ~40 k LUT4; an ECP5-85 has
208 EBR and 84 k LUT4, so a card with both TLS engines fits only if they share
one. They can, because the engine already switches between connections at
segment boundaries (every segment loads its own state, see :mod:`.gcm`: a
few cycles for a new key, nothing with the boards' folded AES): to the
engine, the other direction is just another connection.
And one engine is plenty for Gigabit Ethernet: 128 bits per clock is 16 Gb/s
at 125 MHz, against 2 Gb/s for both directions of the wire.

Arbitration
-----------
A user *holds* the engine while a state it loaded is the engine's current one
(``hold``: from the accepted ``load`` chunk until its segment's last chunk, a
``save`` chunk or the chunk that completes the record's tag, is accepted).
While it holds, only its chunks enter: another user's chunk would run with the
holder's key and counters. Ownership passes when the owner neither holds nor
presents a chunk and another user presents one, so the owner's next segment
starts with a ``load`` and the engine's own context switch does the rest: a
change of owner costs one clock. A user is expected to hold only while it has
bytes to give (the TLS engines hold for one frame at most), so a waiting user
waits for at most the owner's current frame.

Outputs
-------
Each input chunk carries its owner in ``Chunk.user``, which the engine returns
on the chunk's ``OutChunk`` and, for the chunk that completes a tag, on the
``TagResult``: the two streams are steered by it. A saved state carries no
user field (states are stored in context tables, bit for bit), so the owners of
``save`` chunks wait in a small FIFO, in input order, which is the order of
``o_state``. Back-pressure from any user stalls the engine, as it would stall
that user's own engine; it never reorders.

Deadlock: while one user holds the engine and waits on its output, the other
waits on the engine. This is safe as long as the holder's output does not
depend on the waiting user's progress. On the board both engines' outputs and
inputs meet in host memory: the window RAM therefore serves AXI reads and
writes independently (:mod:`tlsnic.hdl.board.window`), so a transmit read
burst stalled behind this arbiter never blocks the receive engine's writes.
"""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from .gcm import Chunk, GcmEngine, GcmState, OutChunk, TagResult

__all__ = ["GcmUser", "GcmShare", "attach_engine", "make_share"]


class GcmUser(wiring.Signature):
    """A user's view of a (shared) GCM engine: the engine's streams, flipped,
    and ``hold``.

    Members
    -------
    i_chunk, i_state : Out(stream)
        Into the engine (see :class:`~.gcm.GcmEngine`); ``i_chunk.payload.user``
        is set by the arbiter.
    o_chunk, o_state, o_tag : In(stream)
        From the engine, this user's beats only.
    hold : Out(1)
        A state this user loaded is the engine's current state.
    """
    def __init__(self):
        super().__init__({
            "i_chunk": Out(stream.Signature(Chunk)),
            "i_state": Out(stream.Signature(GcmState)),
            "o_chunk": In(stream.Signature(OutChunk)),
            "o_state": In(stream.Signature(GcmState)),
            "o_tag": In(stream.Signature(TagResult)),
            "hold": Out(1),
        })


def attach_engine(m, engine, port):
    """Connect ``port`` (a flipped :class:`GcmUser`, as a user drives it) to a
    private ``engine``; ``hold`` is not needed and ignored."""
    for name in ("i_chunk", "i_state"):
        src, dst = getattr(port, name), getattr(engine, name)
        m.d.comb += [dst.valid.eq(src.valid), dst.payload.eq(src.payload),
                     src.ready.eq(dst.ready)]
    for name in ("o_chunk", "o_state", "o_tag"):
        src, dst = getattr(engine, name), getattr(port, name)
        m.d.comb += [dst.valid.eq(src.valid), dst.payload.eq(src.payload),
                     src.ready.eq(dst.ready)]


class GcmShare(wiring.Component):
    """:class:`~.gcm.GcmEngine` shared by two users, switched at segment boundaries.

    Members
    -------
    users : In(GcmUser).array(2)

    Parameters
    ----------
    aes_cores : int
        The engine's AES (:class:`~.gcm.GcmEngine`): 0 the unrolled pipeline,
        n iterative cores.
    """
    USERS = 2

    def __init__(self, aes_cores=0):
        self.aes_cores = aes_cores
        super().__init__({"users": In(GcmUser()).array(self.USERS)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = GcmEngine(aes_cores=self.aes_cores)
        # Saves in flight: at most one per slot of the engine plus its two
        # output buffers; 64 keeps the FIFO's pointers plain.
        m.submodules.saves = saves = SyncFIFO(width=1, depth=64)
        assert saves.depth > engine.latency + 2
        users = self.users
        owner = Signal(range(self.USERS))

        def pick(get, index):
            return Array(get(u) for u in users)[index]

        m.d.comb += [
            engine.i_chunk.valid.eq(pick(lambda u: u.i_chunk.valid, owner)),
            engine.i_chunk.payload.eq(pick(lambda u: u.i_chunk.payload.as_value(), owner)),
            engine.i_chunk.payload.user.eq(owner),
            engine.i_state.valid.eq(pick(lambda u: u.i_state.valid, owner)),
            engine.i_state.payload.eq(pick(lambda u: u.i_state.payload.as_value(), owner)),
        ]
        for i, u in enumerate(users):
            mine = owner == i
            m.d.comb += [u.i_chunk.ready.eq(mine & engine.i_chunk.ready),
                         u.i_state.ready.eq(mine & engine.i_state.ready)]

        idle = ~pick(lambda u: u.hold, owner) & ~pick(lambda u: u.i_chunk.valid, owner)
        with m.If(idle & pick(lambda u: u.i_chunk.valid, ~owner)):
            m.d.sync += owner.eq(~owner)

        fire = engine.i_chunk.valid & engine.i_chunk.ready
        m.d.comb += [saves.w_en.eq(fire & engine.i_chunk.payload.save), saves.w_data.eq(owner)]

        # Outputs, steered by their user: chunks and tags by the user bit the
        # engine returns, saved states by the save FIFO.
        def steer(name, to):
            src = getattr(engine, name)
            for i, u in enumerate(users):
                dst = getattr(u, name)
                m.d.comb += [dst.valid.eq(src.valid & (to == i)), dst.payload.eq(src.payload)]
            m.d.comb += src.ready.eq(pick(lambda u: getattr(u, name).ready, to))
            return src.valid & src.ready

        steer("o_chunk", engine.o_chunk.payload.user)
        steer("o_tag", engine.o_tag.payload.user)
        m.d.comb += saves.r_en.eq(steer("o_state", saves.r_data))
        return m


def make_share(**kw):
    """Factory for :class:`cosim.build.Design` (``"tlsnic.hdl.crypto.share:make_share"``)."""
    return GcmShare(**kw)
