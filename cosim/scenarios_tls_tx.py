"""Backend-agnostic scenarios of inline TLS transmit (same shape as :mod:`.scenarios`).

Each scenario is ``async def name(dev, wire, **params) -> dict`` on a
:class:`~tlsnic.driver.device.Device` not yet opened, driving the kTLS driver
(:mod:`tlsnic.driver.ktls`). The observation holds only timing-independent
data: the TX completions (raw), the frames on the wire, the driver's resync
counts and the card's counters. The model must be built with TLS
(:func:`run_on_model` does), and so must the gateware once it has the engine;
a card without ``CAP_TLS_TX`` makes the sessions software ones, which the
observation then shows.
"""

import asyncio

from .scenarios import run_scenario
from tlsnic.driver.ktls import KtlsDriver, KtlsSocket
from tlsnic.driver.tcp import TcpFlow

__all__ = ["SCENARIOS", "run", "run_on_model"]

KEY = {"AES-128-GCM": bytes(range(16)), "AES-256-GCM": bytes(range(32))}
IV = {"1.2": bytes.fromhex("c0c1c2c3"), "1.3": bytes.fromhex("c0c1c2c3c4c5c6c7c8c9cacb")}


def _payload(size, fill):
    return bytes((fill + 13 * i) & 0xFF for i in range(size))


async def _session(dev, *, version, cipher, strategy, mss, iss, rec_seq=0, flow=None):
    await dev.open(tx_log=8, rx_log=2)
    ktls = KtlsDriver(dev, strategy=strategy, seed=11)
    sock = KtlsSocket(ktls, flow or TcpFlow(), iss=iss, mss=mss)
    await sock.enable_tx(version, cipher, KEY[cipher], IV[version], rec_seq)
    return ktls, sock


async def _observe(dev, wire, ktls, sock, obs):
    await sock.close()
    completions = [c.to_dict() for c in ktls.completions]
    sent = sum(c["status"] == "OK" and c["opcode"] == "PACKET" for c in completions)
    obs["tx_completions"] = completions
    obs["wire"] = {"0": [(await wire.recv(0)).hex() for _ in range(sent)]}
    obs["driver"] = {k: v for k, v in ktls.stats.items() if v}
    obs["counters"] = await dev.update_stats()
    return obs


async def tls_tx_stream(dev, wire, *, version="1.2", cipher="AES-128-GCM", mss=1448,
                        sizes=(0, 1, 15, 16, 17, 1447, 1448, 16384), iss=0xFFFF_F000):
    """In-order records of every size, across a seq wrap: only the stream path."""
    ktls, sock = await _session(dev, version=version, cipher=cipher, strategy="dump",
                                mss=mss, iss=iss, rec_seq=3)
    for i, size in enumerate(sizes):
        sock.write(_payload(size, i), record_size=max(size, 1))
    await sock.output()
    await sock.send_ack()
    return await _observe(dev, wire, ktls, sock, {"sizes": list(sizes)})


async def tls_tx_retransmit(dev, wire, *, version="1.3", cipher="AES-256-GCM", strategy="dump",
                            mss=536, sizes=(4000, 100, 16384, 3), seed_offsets=(0, 1608, 4000,
                                                                                 4121, 20400)):
    """Retransmits at record starts, mid record, inside a trailer and of a
    record's last segment; and a local drop (forward gap)."""
    ktls, sock = await _session(dev, version=version, cipher=cipher, strategy=strategy,
                                mss=mss, iss=7777)
    for i, size in enumerate(sizes):
        sock.write(_payload(size, i), record_size=max(size, 1))
    segs = sock.tcp.new_segments()
    await sock.send_segments(segs[:1])
    await sock.send_segments(segs[2:])        # segs[1] lost before the card: forward gap
    await sock.send_segments(segs[1:2])
    for offset in seed_offsets:
        await sock.retransmit(7777 + offset, mss)
    return await _observe(dev, wire, ktls, sock, {"sizes": list(sizes)})


SCENARIOS = {fn.__name__: fn for fn in (tls_tx_stream, tls_tx_retransmit)}


async def run(name, bus, wire, **params):
    """Run scenario ``name`` on a backend; return its observation (device closed after)."""
    return await run_scenario(SCENARIOS[name], bus, wire, **params)


def run_on_model(name, **params):
    """Run scenario ``name`` on a fresh reference model with the TLS engine."""
    from .model import ReferenceNic
    nic = ReferenceNic(tls=True)
    return asyncio.run(run(name, nic, nic.wire, **params))
