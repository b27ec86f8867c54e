"""kTLS transmit lifecycle on the reference model: route change and tag reset,
tag and session lifetime, close with records queued, shared pages, rekey and
KeyUpdate, explicit-nonce continuity.

Same oracle as ``test_model_tls_tx``: every frame of every port is parsed by
Scapy, reassembled per flow (a byte sent twice must be the same byte) and
decrypted with an independent AESGCM. Tests named ``test_edgeN_*`` cover edge
case N of the driver anchors.
"""

import asyncio
import errno

import pytest
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from tlsnic.abi import Counter, TxOpcode
from tlsnic.cosim.model import ReferenceNic
from tlsnic.driver.device import Device
from tlsnic.driver.ktls import KtlsDriver, KtlsError, KtlsSocket, MODE_IFNET, MODE_SW
from tlsnic.driver.tcp import TcpFlow

from test_model_tls_tx import (IV12, KEYS, LIVE_HARNESSES, no_leaks_after_test,  # noqa: F401
                               oracle_decrypt, reassemble, record_starts)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def run(coro):
    return asyncio.run(coro)


class Harness:
    """A two-port TLS model, the kTLS driver and one socket on port 0."""

    def __init__(self, version="1.2", *, mss=536, strategy="dump", iss=1000, rec_seq=7,
                 contexts=64, port_contexts=None, txcq_log=None, async_crypto=False,
                 mode=MODE_IFNET, rexmit_pct=100):
        self.nic = ReferenceNic(ports=2, tls=True, tx_contexts=contexts)
        self.dev = Device(self.nic)
        self.version, self.cipher = version, "AES-128-GCM"
        self.key = KEYS[self.cipher]
        self.iv = IV12[:4] if version == "1.2" else IV12
        self.iss, self.rec_seq, self.mss, self.mode = iss, rec_seq, mss, mode
        self.kw = dict(strategy=strategy, seed=5, port_contexts=port_contexts,
                       async_crypto=async_crypto, ifnet_max_rexmit_pct=rexmit_pct)
        self.txcq_log = txcq_log
        self.plaintext = []
        self.wire = []

    async def open(self):
        await self.dev.open(tx_log=8, rx_log=2, txcq_log=self.txcq_log)
        self.ktls = KtlsDriver(self.dev, **self.kw)
        self.baseline = len(self.nic.memory._regions)     # rings and RX buffers
        LIVE_HARNESSES.append(self)
        self.sock = await self.new_socket()
        return self

    async def new_socket(self, flow=None, route=0):
        sock = KtlsSocket(self.ktls, flow or TcpFlow(), iss=self.iss, mss=self.mss, route=route)
        await sock.enable_tx(self.version, self.cipher, self.key, self.iv, self.rec_seq, self.mode)
        return sock

    def write(self, sizes, fill=0):
        for i, size in enumerate(sizes):
            data = bytes((fill + i * 7 + j) & 0xFF for j in range(size))
            self.sock.write(data, record_size=max(size, 1))
            self.plaintext.append(data)

    def counter(self, name):
        return self.nic.counters[Counter[name]]

    def frames(self, port=None):
        """Frames put on ``port`` (default: every port) since the last call."""
        out = []
        for p in ([port] if port is not None else range(2)):
            out += list(self.nic.egress[p])
            self.nic.egress[p].clear()
        self.wire.extend(out)
        return out

    def check(self):
        """Everything sent so far, over both ports, decrypts to what was written."""
        self.frames()
        data = [f for f in self.wire if not Ether(f)[TCP].flags.F]
        stream = reassemble(data, self.iss)
        assert oracle_decrypt(self.version, self.key, self.iv, self.rec_seq, stream) \
            == self.plaintext
        return stream

    async def recover(self, sock=None):
        """Drive the retransmit timer, ACKing what goes out, until all is ACKed."""
        sock = sock or self.sock
        await sock.rexmt_timer()
        for _ in range(200):
            if (sock.tcp.snd_una - sock.tcp.write_seq) & 0xFFFF_FFFF in (0, 1):   # FIN too
                return
            sock.ack(sock.tcp.snd_nxt)
            await sock.output()
        raise AssertionError("no progress")

    async def no_leaks(self):
        await self.ktls.flush()
        assert self.nic.tls_tx.in_use == 0 == self.ktls.tags_in_use
        assert sum(self.ktls.port_in_use.values()) == 0
        assert len(self.nic.memory._regions) == self.baseline


def tags_on_wire(h):
    return {c.tag for c in h.ktls.completions if c.opcode is TxOpcode.PACKET}


# --- edge case 11: route change, reset task ----------------------------------------------

@pytest.mark.parametrize("strategy", ("dump", "seek"))
@pytest.mark.parametrize("version", ("1.2", "1.3"))
def test_edge11_route_change_reset_task(version, strategy):
    async def body():
        h = await Harness(version, strategy=strategy).open()
        sock, ktls = h.sock, h.ktls
        h.write((3000, 2000))
        await sock.output()
        assert len(h.frames(0)) > 0
        session = sock.session
        old = session.snd_tag
        assert old.ifp == 0
        sock.ack(h.iss + 1000)                       # mid record 0
        sock.route = 1                               # the route moved to port 1
        h.write((1500,))
        snd_max = sock.tcp.snd_max
        sent = await sock.output()
        assert sent == [] and h.frames() == []        # EAGAIN: dropped, not sent
        assert ktls.stats["eagain"] == 1 == ktls.stats["enobufs"] == ktls.stats["reset_tasks"]
        assert sock.tcp.snd_cwnd == sock.tcp.mss
        assert sock.tcp.snd_max == snd_max and sock.tcp.snd_nxt == snd_max   # rolled back
        assert await sock.output() == []              # cwnd of one MSS: nothing to send
        await sock.rexmt_timer()                      # the timer: EAGAIN again, no second task
        assert ktls.stats["eagain"] == 2 and ktls.stats["reset_tasks"] == 1
        assert session.reset_pending and len(ktls.tasks) == 1
        await ktls.run_tasks()
        new = session.snd_tag
        assert new is not old and new.ifp == 1 and old.state == "freed"
        assert not session.reset_pending and ktls.stats["ifnet_reset"] == 1
        assert h.nic.tls_tx.in_use == 1
        await h.recover()
        port1 = h.frames(1)
        assert port1 and h.frames(0) == []
        assert new.tag in tags_on_wire(h)
        h.check()
        assert ktls.stats["ifnet_reset_failed"] == 0
        await sock.close()
        await h.no_leaks()
    run(body())


def test_edge11_packets_dropped_while_tag_null():
    """A tcp_output racing the reset (the tag is NULL while the new one is set up)."""
    async def body():
        h = await Harness("1.3").open()
        sock, ktls = h.sock, h.ktls
        h.write((2000,))
        sock.route = 1
        await sock.output()
        seen = []
        alloc = ktls.alloc_snd_tag

        async def racing_alloc(s, params, **kw):
            assert s.session.snd_tag is None
            seen.append(await s.output())            # dropped: EAGAIN, no new task
            return await alloc(s, params, **kw)
        ktls.alloc_snd_tag = racing_alloc
        await ktls.run_tasks()
        assert seen == [[]] and ktls.stats["eagain"] == 2 and ktls.stats["reset_tasks"] == 1
        assert h.frames() == []
        ktls.alloc_snd_tag = alloc
        await h.recover()
        h.check()
        await sock.close()
        await h.no_leaks()
    run(body())


def test_edge11_reset_failure_drops_connection():
    async def body():
        h = await Harness("1.2", port_contexts=1).open()
        sock, ktls = h.sock, h.ktls
        other = await h.new_socket(TcpFlow(src_port=50001), route=1)   # port 1's only context
        h.write((4000,))
        await sock.output()
        sock.route = 1
        await sock.rexmt_timer()
        assert ktls.stats["reset_tasks"] == 1
        session = sock.session
        await ktls.run_tasks()
        assert sock.error == errno.ECONNABORTED
        assert ktls.stats["ifnet_reset_failed"] == 1 == ktls.stats["ifnet_reset_dropped"]
        assert ktls.stats["ifnet_reset"] == 0
        assert session.reset_pending and session.snd_tag is None
        with pytest.raises(KtlsError) as info:
            await sock.output()
        assert info.value.errno == errno.ECONNABORTED
        with pytest.raises(KtlsError):
            sock.write(b"late")
        await ktls.flush()
        assert h.nic.tls_tx.in_use == 1 == ktls.tags_in_use      # only the other socket's
        await sock.close()                                       # teardown after the failure
        await other.close()
        await h.no_leaks()
    run(body())


def test_teardown_after_failed_reset_frees_everything():
    """The reset fails while the socket holds ifnet records (old session) and
    software records still in the crypto queue (the clone): the drop frees
    both sessions, the records' host buffers, the queue entries and the tag,
    without waiting for a close."""
    async def body():
        h = await Harness("1.2", port_contexts=1, async_crypto=True).open()
        sock, ktls = h.sock, h.ktls
        other = await h.new_socket(TcpFlow(src_port=50001), route=1)   # port 1's only context
        h.write((4000, 1000))
        await sock.output()
        sock.set_tx_mode(MODE_SW)
        h.write((700, 0), fill=2)
        assert len(ktls.crypto_queue) == 2 and len(sock.sessions) == 2
        sock.route = 1
        await sock.rexmt_timer()
        await ktls.tasks.popleft()()                  # the reset task, before the crypto work
        assert sock.error == errno.ECONNABORTED and ktls.stats["ifnet_reset_failed"] == 1
        await ktls.flush()
        assert not sock.sessions and not sock.tcp.entries and not ktls.crypto_queue
        assert all(s.freed for s in (sock.session,)) and not sock.t_nic_ktls_xmit
        assert h.nic.tls_tx.in_use == 1 == ktls.tags_in_use            # the other socket's
        assert len(h.nic.memory._regions) == h.baseline + 1            # its tag log
        assert await ktls.run_tasks() == 0            # nothing left to run for the dead socket
        await other.close()
        await h.no_leaks()
    run(body())


def test_edge11_route_change_after_mode_switch():
    """The cloned (software) session has no tag; the old ifnet one resets."""
    async def body():
        h = await Harness("1.2").open()
        sock, ktls = h.sock, h.ktls
        h.write((3000,))
        await sock.output()
        ifnet = sock.session
        sock.set_tx_mode(MODE_SW)
        h.write((1000, 10), fill=3)
        await sock.output()
        sock.route = 1
        await sock.rexmt_timer()                      # old record, old session: EAGAIN
        assert ifnet.reset_pending and ktls.stats["reset_tasks"] == 1
        await ktls.run_tasks()
        assert ifnet.snd_tag.ifp == 1 and ktls.stats["ifnet_reset"] == 1
        assert sock.t_nic_ktls_xmit
        await h.recover()
        assert h.frames(1)
        h.check()
        await ktls.flush()
        # All ACKed: the old session, its new tag and t_nic_ktls_xmit are gone.
        assert ifnet.freed and not sock.t_nic_ktls_xmit and h.nic.tls_tx.in_use == 0
        await sock.close()
        await h.no_leaks()
    run(body())


@pytest.mark.parametrize("strategy", ("dump", "seek"))
def test_retransmit_after_tag_reset(strategy):
    """After a reset the new context's tag log is empty: a retransmit carrying a
    tag falls back to dump under seek too; once the new context has computed
    that tag, seek uses it. Every retransmitted byte equals the original."""
    async def body():
        h = await Harness("1.3", strategy=strategy).open()
        sock, ktls = h.sock, h.ktls
        h.write((3000, 1000))
        await sock.output()
        assert h.frames(0)
        old = sock.session.snd_tag
        assert await ktls.read_tag_log(old, h.rec_seq) is not None
        sock.route = 1
        assert await sock.retransmit(h.iss + 1000, 536) == []        # EAGAIN
        await ktls.run_tasks()
        new = sock.session.snd_tag
        assert new.ifp == 1 and old.state == "freed" and ktls.stats["ifnet_reset"] == 1
        rec0_end = h.iss + 5 + 3000 + 17
        await sock.retransmit(rec0_end - 300, 300)                   # carries record 0's tag
        # The new context starts at record 0 (its first unacked record): a
        # forward gap, so only [record start, seq) is dumped, no SET_PROGRESS.
        assert ktls.stats["redma_bytes"] == rec0_end - 300 - h.iss
        assert h.counter("TX_TLS_RESYNC") == 0
        if strategy == "seek":
            assert ktls.stats["seek_fallback_dump"] == 1
            assert await ktls.read_tag_log(new, h.rec_seq) is not None
        await sock.retransmit(h.iss + 1000, 536)                     # mid record 0 again
        if strategy == "seek":
            assert ktls.stats["resync_seek_tag"] == 1
            assert ktls.stats["redma_bytes"] == rec0_end - 300 - h.iss
        else:
            assert ktls.stats["redma_bytes"] == rec0_end - 300 - h.iss + 1000
        # Mid record 1, sent whole before the reset, its tag not in the new
        # log: seek enters it without a tag (no dump); dump re-reads the prefix.
        redma = ktls.stats["redma_bytes"]
        await sock.retransmit(rec0_end + 300, 200)
        if strategy == "seek":
            assert ktls.stats["redma_bytes"] == redma and ktls.stats["resync_seek"] == 2
            assert ktls.stats["resync_seek_tag"] == 1
        else:
            assert ktls.stats["redma_bytes"] == redma + 300
        assert h.frames(0) == [] and h.frames(1)
        assert all(c.status.name == "OK" for c in ktls.completions)
        await h.recover()
        h.check()
        await sock.close()
        await h.no_leaks()
    run(body())


@pytest.mark.parametrize("strategy", ("dump", "seek"))
def test_retransmit_after_mode_switch(strategy):
    """Records framed before the switch to software are retransmitted with the
    old tag (recovered by the strategy), those framed after go as plain
    frames; a retransmit spanning both is cut at the session boundary."""
    async def body():
        h = await Harness("1.2", strategy=strategy).open()
        sock, ktls = h.sock, h.ktls
        h.write((3000, 1500))
        await sock.output()
        old_tag = sock.session.snd_tag
        sock.set_tx_mode(MODE_SW)
        h.write((1000,), fill=4)
        await sock.output()
        first = len(ktls.completions)
        rec1_start = h.iss + 5 + 8 + 3000 + 16
        rec2_start = rec1_start + 5 + 8 + 1500 + 16
        await sock.retransmit(h.iss + 1200, 536)
        await sock.retransmit(rec2_start - 100, 536)        # record 1's tail, record 2's head
        packets = [c for c in ktls.completions[first:] if c.opcode is TxOpcode.PACKET]
        assert [c.tag for c in packets] == [old_tag.tag, old_tag.tag, 0]
        assert all(c.status.name == "OK" for c in ktls.completions)
        if strategy == "dump":
            assert ktls.stats["redma_bytes"] == 1200 + (rec2_start - 100 - rec1_start)
        else:
            assert ktls.stats["redma_bytes"] == 0 and ktls.stats["resync_seek_tag"] == 2
        h.check()
        sock.ack(sock.tcp.write_seq)
        await ktls.flush()
        assert old_tag.state == "freed" and not sock.t_nic_ktls_xmit
        await sock.close()
        await h.no_leaks()
    run(body())


# --- edge cases 10 and 12: tag lifetime ---------------------------------------------------

def test_edge10_switch_keeps_old_tag_until_acked():
    async def body():
        h = await Harness("1.3").open()
        sock, ktls = h.sock, h.ktls
        h.write((2000, 2000))
        await sock.output()
        old = sock.session.snd_tag
        sock.set_tx_mode(MODE_SW)
        h.write((700,), fill=9)
        await sock.output()
        await ktls.flush()
        assert old.state == "live" and sock.t_nic_ktls_xmit and h.nic.tls_tx.in_use == 1
        first_end = h.iss + 5 + 2000 + 17
        sock.ack(first_end)                          # one of two old records ACKed
        await ktls.flush()
        assert old.state == "live" and sock.t_nic_ktls_xmit
        await sock.retransmit(first_end + 100, 300)  # the old tag serves the retransmit
        sock.ack(sock.tcp.write_seq)
        await ktls.flush()
        assert old.state == "freed" and not sock.t_nic_ktls_xmit
        assert h.nic.tls_tx.in_use == 0 and sock.sessions == [sock.session]
        h.check()
        await sock.close()
        await h.no_leaks()
    run(body())


def test_edge12_free_waits_for_in_flight_descriptors():
    """TXCQ of 2 entries: the card stalls with tagged frames not yet completed."""
    async def body():
        h = await Harness("1.2", mss=500, txcq_log=1).open()
        sock, ktls = h.sock, h.ktls
        h.write((4000,))
        segs = sock.tcp.new_segments()
        await sock.send_segments(segs, flush=False)
        tag = sock.session.snd_tag
        assert h.dev.tx_in_flight == len(segs)
        assert len(h.nic.egress[0]) == 2              # the card completed two, then stalled
        sock.set_tx_mode(MODE_SW)                     # drop sb_tls_info's reference
        sock.ack(sock.tcp.snd_max)                    # and the records' (as if ACKed)
        assert sock.sessions[0] is sock.session       # the ifnet session is gone ...
        assert tag.refs == len(segs) and tag.state == "live"   # ... its tag is not
        await ktls.poll()                             # two reaped, two more run
        assert tag.state == "live" and h.nic.tls_tx.in_use == 1
        assert h.nic.memory.contains(tag.tag_log_addr)
        assert tag.tag not in ktls.free_tags
        await ktls.flush()
        assert tag.state == "freed" and tag.refs == 0
        assert not h.nic.memory.contains(tag.tag_log_addr)
        assert h.nic.tls_tx.in_use == 0 and ktls.completions[-1].opcode is TxOpcode.FREE
        assert h.ktls.stats["drops_seen"] == 0
        await sock.close()
        await h.no_leaks()
    run(body())


# --- close with records queued ------------------------------------------------------------

def _fin_is_last(h, sock):
    frames = h.frames(0)
    last = Ether(frames[-1])[TCP]
    assert last.flags.F and last.seq == sock.tcp.write_seq
    assert not any(Ether(f)[TCP].flags.F for f in frames[:-1])
    return frames


def test_close_with_records_in_nic_ring():
    async def body():
        h = await Harness("1.2", mss=500, txcq_log=1).open()
        sock, ktls = h.sock, h.ktls
        h.write((3000, 1, 1200))
        await sock.send_segments(sock.tcp.new_segments(), flush=False)
        assert sock.plaintext_sent() == 0             # nothing reported before completions
        await ktls.poll()
        assert 0 < sock.bytes_out() < sock.tcp.write_seq - h.iss
        assert sock.plaintext_sent() < sum(map(len, h.plaintext))
        assert await sock.shutdown()
        _fin_is_last(h, sock)
        assert sock.plaintext_sent() == sum(map(len, h.plaintext))
        h.check()
        tag = sock.sessions[0].snd_tag
        assert tag.state == "live"                    # session end: not before the ACK
        sock.ack(sock.fin_seq + 1)
        await ktls.flush()
        assert tag.state == "freed" and not sock.sessions
        await sock.close()
        await h.no_leaks()
    run(body())


def test_close_with_records_in_software_crypto_queue():
    async def body():
        h = await Harness("1.3", async_crypto=True, mode=MODE_SW).open()
        sock, ktls = h.sock, h.ktls
        h.write((2000, 0, 3000))
        assert await sock.output() == [] and h.frames() == []   # M_NOTREADY
        assert sock.plaintext_sent() == 0 and len(ktls.crypto_queue) == 3
        assert await sock.shutdown()
        assert ktls.stats["sw_encrypted"] == 3
        _fin_is_last(h, sock)
        assert sock.plaintext_sent() == 5000
        h.check()
        with pytest.raises(KtlsError) as info:
            sock.write(b"after shutdown")
        assert info.value.errno == errno.EPIPE
        await sock.close()
        await h.no_leaks()
    run(body())


def test_edge11_fin_waits_for_reset():
    """Shutdown while a route change holds data back: the FIN follows the data."""
    async def body():
        h = await Harness("1.2").open()
        sock, ktls = h.sock, h.ktls
        h.write((2500,))
        sock.route = 1
        assert not await sock.shutdown()              # EAGAIN: nothing out, no FIN
        assert sock.fin_seq is None and sock.plaintext_sent() == 0
        await ktls.run_tasks()
        await h.recover()
        assert sock.fin_seq == sock.tcp.write_seq
        frames = h.frames(1)
        assert Ether(frames[-1])[TCP].flags.F
        h.check()
        await sock.close()
        await h.no_leaks()
    run(body())


# --- shared pages ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", (MODE_IFNET, MODE_SW))
def test_same_pages_sent_twice_never_encrypted_twice(mode):
    async def body():
        h = await Harness("1.2", mode=mode).open()
        sock, ktls, bus = h.sock, h.ktls, h.dev.bus
        data = bytes((i * 31 + 7) & 0xFF for i in range(3000))
        pages = bus.alloc(len(data))
        await bus.mem_write(pages, data)
        first = await sock.sendfile(pages, len(data), record_size=1200)
        again = await sock.sendfile(pages, len(data), record_size=1200)   # the retry
        h.plaintext += [r.plaintext for r in first + again]
        await sock.output()
        await sock.retransmit(h.iss + 1500, 900)       # mid record: DUMP re-reads memory
        await sock.retransmit(h.iss + 3100 + 1300, 600)
        assert await bus.mem_read(pages, len(data)) == data
        owned = [a for r in first + again for a in r.owned]
        if mode == MODE_IFNET:
            assert h.ktls.stats["redma_bytes"] > 0
            for r in first + again:
                hlen = 13
                assert r.host[1][2] >= pages                 # payload span is the pages
                assert await bus.mem_read(r.host[0][2], hlen) == r.data[:hlen]
                assert await bus.mem_read(r.host[2][2], 16) == bytes(16)   # tag placeholder
        else:
            assert owned == []
        stream = h.check()
        nonces = [stream[p + 5:p + 13] for p in record_starts(stream)]
        assert len(set(nonces)) == len(nonces) == 6
        sock.ack(sock.tcp.write_seq)
        await ktls.flush()
        assert not any(h.nic.memory.contains(a) for a in owned)
        assert await bus.mem_read(pages, len(data)) == data
        bus.free(pages)
        await sock.close()
        await h.no_leaks()
    run(body())


def test_ifnet_host_buffer_plaintext_until_acked():
    async def body():
        h = await Harness("1.3").open()
        sock, ktls, bus = h.sock, h.ktls, h.dev.bus
        h.write((4000, 100))
        await sock.output()
        await sock.retransmit(h.iss + 2000, 536)
        records = [e.record for e in sock.tcp.entries]
        for r in records:
            ((_, length, addr),) = r.host
            assert await bus.mem_read(addr, length) == r.data   # framed plaintext, tag zero
        h.check()
        addrs = [addr for r in records for _, _, addr in r.host]
        sock.ack(h.iss + 5 + 4000 + 17)               # the first record only
        assert not h.nic.memory.contains(addrs[0]) and h.nic.memory.contains(addrs[1])
        sock.ack(sock.tcp.write_seq)
        assert not h.nic.memory.contains(addrs[1])
        await sock.close()
        await h.no_leaks()
    run(body())



# --- edge case 19: rekey, KeyUpdate --------------------------------------------------------------

def test_edge19_rekey_ealready_key_update_rejected():
    async def body():
        h = await Harness("1.3").open()
        sock = h.sock
        for mode in (MODE_IFNET, MODE_SW):
            with pytest.raises(KtlsError) as info:
                await sock.enable_tx("1.3", "AES-128-GCM", bytes(16), bytes(12), mode=mode)
            assert info.value.errno == errno.EALREADY
        h.write((100,))
        write_seq, seqno = sock.tcp.write_seq, sock.framer_seqno()
        key_update = bytes([24, 0, 0, 1, 0])           # update_not_requested
        ticket = bytes([4, 0, 0, 2, 0xAA, 0xBB])
        for message in (key_update, ticket + key_update):
            with pytest.raises(KtlsError) as info:
                sock.write(message, record_type=22)
            assert info.value.errno == errno.EINVAL
        assert sock.tcp.write_seq == write_seq and sock.framer_seqno() == seqno
        h.write((50,), fill=1)
        await sock.output()
        h.check()
        # After a switch the cloned session still refuses both.
        sock.set_tx_mode(MODE_SW)
        with pytest.raises(KtlsError):
            sock.write(key_update, record_type=22)
        with pytest.raises(KtlsError) as info:
            await sock.enable_tx("1.3", "AES-128-GCM", bytes(16), bytes(12))
        assert info.value.errno == errno.EALREADY
        await sock.close()
        await h.no_leaks()
    run(body())


# --- edge case 9: explicit nonce continuity --------------------------------------------------

def test_edge9_explicit_nonce_continuity_across_switches():
    async def body():
        h = await Harness("1.2", mss=536).open()
        sock, ktls = h.sock, h.ktls
        h.write((1000, 1000, 1000))
        segs = sock.tcp.new_segments()
        await sock.send_segments(segs[:2])            # records still in flight
        sock.set_tx_mode(MODE_SW)
        h.write((500, 500), fill=2)
        await sock.send_segments(segs[2:])
        await sock.output()
        await sock.retransmit(h.iss + 600, 800)       # old tag, old nonces
        with pytest.raises(KtlsError) as info:
            await sock.ktls_set_tx_mode(MODE_IFNET)   # the ifnet session still lives
        assert info.value.errno == errno.EALREADY
        sock.ack(sock.tcp.write_seq)
        await ktls.flush()
        assert not sock.t_nic_ktls_xmit
        # Back to ifnet, with a writer framing records while the tag is set up.
        alloc = ktls.alloc_snd_tag

        async def racing_alloc(s, params, **kw):
            tag = await alloc(s, params, **kw)
            h.write((300, 301), fill=5)               # old (software) session, meanwhile
            return tag
        ktls.alloc_snd_tag = racing_alloc
        await sock.ktls_set_tx_mode(MODE_IFNET)
        ktls.alloc_snd_tag = alloc
        assert sock.session.mode == MODE_IFNET and ktls.stats["switch_to_ifnet"] == 1
        h.write((1200, 7), fill=8)
        await sock.output()
        stream = h.check()
        nonces = [int.from_bytes(stream[p + 5:p + 13], "big") for p in record_starts(stream)]
        assert len(nonces) == 9
        assert nonces == [nonces[0] + i for i in range(9)]   # unique and continuous
        assert tags_on_wire(h) >= {0}
        await sock.close()
        await h.no_leaks()
    run(body())
