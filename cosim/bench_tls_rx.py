"""``tlsnic bench rx``: how much of a lossy TLS stream the card decrypts inline.

One connection receives ``records`` records of 16 KB (TLS 1.2, AES-128-GCM by
default) in MSS-sized segments. Each segment is lost on the wire with
probability ``loss``, decided per ``(offset, attempt)`` by a seeded generator
(every run of one seed loses the very same segments); a lost segment is sent
again ``dupack`` segments later (fast retransmit) until a copy gets through.
Everything runs in lock step through the kTLS receive driver, as the
scenarios do (:mod:`.scenarios_tls_rx`), and every record delivered is
checked against what the peer sealed.

Figures per loss rate:

* records decrypted by the card, and finished in software (from ciphertext,
  or recrypted first);
* ``hw_over_in_order``: records the card decrypted, divided by the records
  whose segments all arrived in order (each segment's first byte the next
  one the card expected: no gap before it, no retransmission). Those are the
  records the card could have decrypted; what it misses of them is the cost
  of losing and regaining sync (goal: at least 0.97 at 1% loss);
* ``records_to_resume``: per loss, the records from the one the lost
  segment belonged to up to the next record the card decrypted (1: only the
  record hit), mean and maximum, for losses that hid a header and those that
  did not (a loss took a byte of a header or none).

``--sim verilator`` (the default) runs all of it on the card's Verilog and
adds the in-order throughput in bits per clock for each suite (TLS 1.2 and 1.3
with AES-128 and AES-256, 16 KB records, all segments back to back:
:mod:`.bench_tls_rx_card`). ``--sim model`` runs the loss runs on the reference
model, which has no clock (``bits_per_clock_in_order`` is ``null``); both
backends must give the same loss figures, since the model is the gateware's
scoreboard.
"""

import argparse
import asyncio
import json
import random
import statistics
import sys

from tlsnic.driver.tls_record import HEADER_LEN, TLS_MAX_PLAINTEXT

from .scenarios_tls_rx import Harness, payload

__all__ = ["LOSS_RATES", "loss_run", "run", "main"]

LOSS_RATES = (0.001, 0.01, 0.05)
#: Card counters a run reports.
CARD_COUNTERS = ("rx_packets", "rx_tls_decrypted_packets", "rx_tls_records", "rx_tls_resync_req",
                 "rx_tls_resync_ok", "rx_tls_resync_fail", "rx_tls_lost_sync", "rx_tls_ooo")


def _lost(seed, loss, offset, attempt):
    return random.Random(f"{seed}:{loss}:{offset}:{attempt}").random() < loss


async def loss_run(bus, wire, *, loss, records=300, seed=1, mss=1448, dupack=3,
                   version="1.2", cipher="AES-128-GCM", size=TLS_MAX_PLAINTEXT):
    """One connection of ``records`` records under ``loss``; return its figures."""
    from tlsnic.driver.device import Device
    dev = Device(bus)
    h = await Harness(dev, wire).open()
    try:
        peer, sock = await h.flow(version=version, cipher=cipher, irs=seed * 7919)
        for i in range(records):
            peer.record(payload(size, i))
        segments = peer.segments(mss=mss)
        starts = [r.start for r in peer.records]
        # Send with seeded loss and fast retransmit; note where each first
        # copy went and which arrived in order for the card.
        pending, order, expected = [], [], 0
        losses, out_of_order = [], set()
        queue = [(seg, 0) for seg in segments]
        sent = 0
        while queue or pending:
            if pending and (not queue or pending[0][0] <= sent):
                _, seg, attempt = pending.pop(0)
            else:
                seg, attempt = queue.pop(0)
            offset, length = seg
            if _lost(seed, loss, offset, attempt):
                if attempt == 0:
                    losses.append(offset)
                pending.append((sent + dupack, seg, attempt + 1))
                pending.sort()
                continue
            if offset != expected:
                out_of_order.add(offset)
            expected = max(expected, offset + length)
            await h.send(peer.frame(offset, length))
            sent += 1
        h.check(peer, sock)
        paths = [entry[3] for entry in sock.record_log]
        assert len(paths) == records and not sock.error, "every record must arrive"
        figures = _figures(paths, starts, segments, losses, out_of_order, peer)
        counters = await dev.update_stats()
        figures["card"] = {k: counters[k] for k in CARD_COUNTERS}
        figures["driver"] = {k: v for k, v in h.rx.stats.items() if v}
        await sock.close()
        return figures
    finally:
        await dev.close()


def _record_of(starts, offset):
    """Index of the record holding stream byte ``offset``."""
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= offset:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _figures(paths, starts, segments, losses, out_of_order, peer):
    ends = starts[1:] + [len(peer.stream)]
    spoiled = set()
    for offset, length in segments:
        if offset in out_of_order or offset in losses:
            first, last = _record_of(starts, offset), _record_of(starts, offset + length - 1)
            spoiled.update(range(first, last + 1))
    in_order = [i for i in range(len(paths)) if i not in spoiled]
    hw_in_order = sum(paths[i] == "nic" for i in in_order)
    resume = {"header": [], "no_header": []}
    for offset in losses:
        length = next(l for o, l in segments if o == offset)
        first = _record_of(starts, offset)
        hid_header = any(s < offset + length and offset < s + HEADER_LEN for s in starts)
        following = next((i for i in range(first + 1, len(paths)) if paths[i] == "nic"), None)
        if following is not None:
            resume["header" if hid_header else "no_header"].append(following - first)
    return {
        "records": len(paths),
        "segments": len(segments),
        "lost_segments": len(losses),
        "records_nic": paths.count("nic"),
        "records_sw": paths.count("sw"),
        "records_recrypt": paths.count("recrypt"),
        "records_in_order": len(in_order),
        "hw_in_order": hw_in_order,
        "hw_over_in_order": round(hw_in_order / len(in_order), 4) if in_order else None,
        "records_to_resume": {
            kind: {"losses": len(v), "mean": round(statistics.mean(v), 2) if v else None,
                   "max": max(v) if v else None}
            for kind, v in resume.items()},
        "bytes": ends[-1],
    }


def run_gateware(*, records=300, seed=1, mss=1448, loss_rates=LOSS_RATES, in_order_records=8,
                 sim="verilator"):
    """In-order throughput and every loss rate on the card's Verilog; return the report."""
    from . import bench_tls_rx_card
    got = bench_tls_rx_card.run(sim, records=in_order_records, mss=mss, loss_rates=loss_rates,
                                loss_records=records, seed=seed)
    return {"backend": f"gateware ({got['simulator']})", "records": records,
            "record_size": TLS_MAX_PLAINTEXT, "mss": mss, "seed": seed,
            "bits_per_clock_in_order": {suite: f["tls"]["bits_per_cycle"]
                                        for suite, f in got["in_order"].items()},
            "in_order": got["in_order"], "loss": got["loss"]}


def run(*, records=300, seed=1, mss=1448, loss_rates=LOSS_RATES, **kwargs):
    """Every loss rate on a fresh reference model; return the report."""
    from .model import ReferenceNic
    report = {"backend": "model", "records": records, "record_size": TLS_MAX_PLAINTEXT,
              "mss": mss, "seed": seed, "bits_per_clock_in_order": None, "loss": {}}
    for loss in loss_rates:
        nic = ReferenceNic(tls=True, rx_contexts=256)
        report["loss"][str(loss)] = asyncio.run(
            loss_run(nic, nic.wire, loss=loss, records=records, seed=seed, mss=mss, **kwargs))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="tlsnic bench rx", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mss", type=int, default=1448)
    parser.add_argument("--sim", default="verilator", choices=["verilator", "icarus", "model"],
                        help="the card's Verilog in a simulator (default), or the reference model")
    parser.add_argument("--in-order-records", type=int, default=8,
                        help="records of each in-order throughput run (gateware only)")
    args = parser.parse_args(argv)
    if args.sim == "model":
        report = run(records=args.records, seed=args.seed, mss=args.mss)
    else:
        report = run_gateware(records=args.records, seed=args.seed, mss=args.mss,
                              in_order_records=args.in_order_records, sim=args.sim)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"TLS RX on the {report['backend']}: {args.records} records of 16 KB, MSS {args.mss}, "
          f"seed {args.seed}")
    for suite, f in report.get("in_order", {}).items():
        print(f"in order, {suite}: {f['tls']['bits_per_cycle']} bits/clock decrypting "
              f"({f['plain']['bits_per_cycle']} with no receive context), "
              f"{f['tls']['frames']} frames")
    print(f"{'loss':>6} {'lost':>5} {'nic':>5} {'sw':>5} {'recrypt':>7} {'in-order':>8} "
          f"{'hw/in-order':>11} {'resume hdr':>10} {'resume no-hdr':>13}")
    for loss, f in report["loss"].items():
        r = f["records_to_resume"]
        print(f"{float(loss):>6.1%} {f['lost_segments']:>5} {f['records_nic']:>5} "
              f"{f['records_sw']:>5} {f['records_recrypt']:>7} {f['records_in_order']:>8} "
              f"{f['hw_over_in_order']!s:>11} {r['header']['mean']!s:>10} "
              f"{r['no_header']['mean']!s:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
