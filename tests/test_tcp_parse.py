"""``hdl/net/tcp_parse.py`` against Scapy's own dissection of random frames."""

import random

import pytest
from amaranth.sim import Simulator
from scapy.all import Dot1Q, Ether, IP, IPv6, IPv6ExtHdrDestOpt, TCP, UDP, Raw, IPOption_NOP

from tlsnic.hdl.net.tcp_parse import TcpParser


def _frames(rng, n):
    for _ in range(n):
        l2 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        if rng.random() < 0.3:
            l2 = l2 / Dot1Q(vlan=rng.randrange(4096))
        kind = rng.choice(("v4", "v4opt", "v6", "v6ext", "udp", "frag"))
        payload = Raw(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200))))
        tcp = TCP(sport=rng.randrange(65536), dport=rng.randrange(65536), seq=rng.randrange(2**32),
                  options=[("NOP", None)] * rng.choice((0, 4, 12, 40)))
        if kind == "v4":
            f = l2 / IP(src="10.1.2.3", dst="192.0.2.77") / tcp / payload
        elif kind == "v4opt":
            f = l2 / IP(src="10.1.2.3", dst="192.0.2.77", options=[IPOption_NOP()] * 40) / tcp / payload
        elif kind == "v6":
            f = l2 / IPv6(src="2001:db8::1", dst="2001:db8::abcd") / tcp / payload
        elif kind == "v6ext":
            f = l2 / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrDestOpt() / tcp / payload
        elif kind == "udp":
            f = l2 / IP() / UDP() / payload
        else:
            f = l2 / IP(flags="MF") / tcp / payload
        raw = bytes(f)
        if rng.random() < 0.2:
            raw += bytes(rng.randrange(1, 20))      # Ethernet padding after the IP datagram
        yield kind, raw


def _expect(kind, raw):
    f = Ether(raw)
    if kind in ("udp", "frag", "v6ext") or TCP not in f:
        return None
    ip = f[IP] if IP in f else f[IPv6]
    l3 = 18 if Dot1Q in f else 14
    tcp = f[TCP]
    start = len(raw) - len(bytes(tcp)) + tcp.dataofs * 4
    if IP in f:
        end = l3 + ip.len
        addrs = (bytes(map(int, ip.src.split("."))), bytes(map(int, ip.dst.split("."))))
    else:
        import ipaddress
        end = l3 + 40 + ip.plen
        addrs = (ipaddress.IPv6Address(ip.src).packed, ipaddress.IPv6Address(ip.dst).packed)
    start = l3 + (ip.ihl * 4 if IP in f else 40) + tcp.dataofs * 4
    return {"seq": tcp.seq, "src_port": tcp.sport, "dst_port": tcp.dport,
            "payload_start": start, "payload_end": end,
            "src_addr": int.from_bytes(addrs[0], "little"),
            "dst_addr": int.from_bytes(addrs[1], "little")}


def test_tcp_parser_matches_scapy():
    rng = random.Random(5)
    cases = list(_frames(rng, 60))
    dut = TcpParser()
    got = []

    async def source(ctx):
        for _, raw in cases:
            words = [raw[i:i + 8] for i in range(0, len(raw), 8)]
            for i, w in enumerate(words):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"data": int.from_bytes(w.ljust(8, b"\0"), "little"),
                                        "keep": (1 << len(w)) - 1, "last": i == len(words) - 1})
                await ctx.tick().until(dut.i.ready)
                if rng.random() < 0.2:          # gaps on the input
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        while len(got) < len(cases):
            ctx.set(dut.info.ready, rng.random() < 0.7)     # back-pressure on info
            # What counts is the handshake as the clock edge saw it.
            *_, valid, ready, payload = await ctx.tick().sample(
                dut.info.valid, dut.info.ready, dut.info.payload)
            if valid and ready:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run_until(1e-3)
    assert len(got) == len(cases)
    for (kind, raw), info in zip(cases, got):
        want = _expect(kind, raw)
        assert info.is_tcp == (want is not None), (kind, raw.hex())
        if want:
            for field, value in want.items():
                assert getattr(info, field) == value, (kind, field, raw.hex())
