"""The board top under cocotb: RGMII PHY model, UART host link, TLS both ways.

The Verilog is the board top itself (``hdl/board/sim.py``: :class:`BoardTop`
with the PLL's clocks driven from here and behavioural DDR registers in place
of the ECP5 primitives; MAC, CDC FIFOs, UART bridge, window RAM and the NIC
with its TLS transmit and receive engines as synthesized). Around it:

* cocotbext-eth's ``RgmiiPhy`` on the RGMII pins, at 1000 Mb/s and, for one
  scenario, 100 Mb/s (forced through ``BoardReg.SPEED_MODE``: the PHY model
  sends no in-band status). Frames go in with preamble and an FCS computed
  here with :func:`zlib.crc32` and come out checked the same way.
* cocotbext-uart on the host UART pins, under the driver's own
  :class:`~tlsnic.driver.serial_bus.SerialBus` (through
  :class:`~tlsnic.cosim.cocotb_uart.CocotbUartTransport`), so the very
  ``Device`` and kTLS code that drives a real board drives this one. The UART
  runs at 4 clocks per bit (31.25 Mbaud), the bridge's minimum.

One simulation runs a batch of scenarios, each after a board reset (the PLL
"loses lock"), and writes what it saw; the pytest functions below check it:

* plain frames both ways (``scenarios.loopback``: TX with checksum offload,
  the frames taken at the PHY and sent back in), at 1000 and 100 Mb/s;
* TLS transmit (``scenarios_tls_tx.tls_tx_stream``): records sealed by the
  card, captured at the PHY, decrypted with ``cryptography``'s AESGCM;
* TLS receive (``scenarios_tls_rx_card.tls_rx_card_stream``): records sealed
  with AESGCM here, sent in by the PHY, decrypted in place by the card; the
  delivered payloads are compared with an independent decryption, and every
  completion must say TRACKING without a tag failure;
* a frame with a bad FCS (and a runt) from the PHY: dropped and counted by the
  MAC, the good frame after them delivered.

Every scenario's observation must also equal the reference model's for the
same scenario (frames the model sends or receives padded to the 60 bytes an
Ethernet wire carries), and the MAC's counters (read over the UART) must
account for every frame.

Marked ``cosim`` (in the default ``make test``): the whole board is a
Verilator build of its own (no other test shares it). Measured 2026-11-22 on
the 2-core machine with other jobs at low priority: 3 min 43 s from clean
(Verilog export, Verilator build, the batch of five scenarios at ~20 k
cycles/s, 12-18 s each, nearly all of it UART traffic), 4 min of CPU; about
1.4 min once built. ``make test-board`` runs this file alone.
A scenario that goes wrong
ends in a bounded wait (``SerialBus`` interrupt timeout 20 ms of simulated
time, a 2 ms budget per frame at the PHY), never a hang.
"""

import json
import logging
import os
import random
import sys
import warnings
import zlib
from pathlib import Path

import cocotb
import pytest
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer, with_timeout
from cocotbext.eth import GmiiFrame, RgmiiPhy

from board_phy_model import PREAMBLE, wire_bytes
from tlsnic.cosim import scenarios, scenarios_tls_rx_card, scenarios_tls_tx, traffic
from tlsnic.cosim.cocotb_uart import CocotbUartTransport
from tlsnic.cosim.wire_api import Wire
from tlsnic.driver.serial_bus import SerialBus
from tlsnic.hdl.board.mac import MacCounter
from tlsnic.link import BoardReg

CLOCK_NS = 8                 # every PLL output is 125 MHz on the default board
TX90_DELAY_NS = 2            # rgmii_tx90: a quarter period after rgmii_tx
DIVISOR = 4                  # UART clocks per bit
LINK_IDLE = 640              # the bridge's quiet time, core clocks (16 byte times)
MIN_FRAME = 60               # Ethernet frame without FCS; shorter ones are padded
WIRE_BUDGET_NS = 2_000_000   # a frame the card reported sent must be at the PHY by then
SPEED_CODE = {1000: 3, 100: 2, 10: 1}     # BoardReg.SPEED_MODE

# --- the batch ---------------------------------------------------------------------------

#: Small rings and buffers: the board's host memory is a 64 KiB window filled
#: over the UART, where every byte costs 40 clocks.
TX_OPEN = {"tx_log": 3, "rx_log": 1, "rx_buf_size": 128, "tag_log_log2": 2}
RX_OPEN = {"tx_log": 2, "rx_log": 2, "rx_buf_size": 512}

#: key -> (scenario, params, link speed in Mb/s). Loopback seeds picked for
#: small frames (a few hundred bytes): every byte of a frame crosses the UART
#: three times (zeroed, written, read back).
BATCH = {
    "plain_1000": ("loopback", {"count": 2, "rx_buf_size": 512, "seed": 38}, 1000),
    "plain_100": ("loopback", {"count": 2, "rx_buf_size": 512, "seed": 2}, 100),
    "tls_tx": ("tls_tx_stream", {"version": "1.2", "cipher": "AES-128-GCM", "mss": 256,
                                 "sizes": (0, 1, 17, 300), "iss": 0xFFFF_FF80,
                                 "open_args": TX_OPEN}, 1000),
    "tls_rx": ("tls_rx_card_stream", {"version": "1.3", "cipher": "AES-256-GCM", "mss": 200,
                                      "sizes": (0, 1, 17, 300, 5), "open_args": RX_OPEN}, 1000),
    "bad_fcs": ("board_bad_fcs", {}, 1000),
}


def _scenario(name):
    every = {**scenarios.SCENARIOS, **scenarios_tls_tx.SCENARIOS,
             **scenarios_tls_rx_card.SCENARIOS, "board_bad_fcs": board_bad_fcs}
    return every[name]


def _pad(frame):
    return frame + bytes(MIN_FRAME - len(frame)) if len(frame) < MIN_FRAME else frame


# --- the testbench (runs inside the simulator) ---------------------------------------------

class WireError(AssertionError):
    """The card put something on the wire that is not a good Ethernet frame."""


class RgmiiPhyCppClock(RgmiiPhy):
    """cocotbext-eth's :class:`RgmiiPhy`, its receive clock run by cocotb's C++
    clock instead of a Python coroutine (two Python wake-ups per 8 ns)."""

    def set_speed(self, speed):
        if speed not in (10e6, 100e6, 1000e6):
            raise ValueError("Invalid speed selection")
        self.speed = speed
        if self._clock_cr is not None:
            self._clock_cr.stop()
        period = 8 if speed == 1000e6 else 4e9 / speed       # ns, as RgmiiPhy has it
        self._clock_cr = Clock(self.rx_clk, period, "ns", impl="gpi")
        self._clock_cr.start(start_high=False)
        self.tx.mii_mode = self.rx.mii_mode = speed != 1000e6


class PhyWire(Wire):
    """The scenarios' :class:`Wire` at the PHY: frames padded to 60 bytes, given
    a preamble and an FCS (``zlib.crc32``) going in; preamble, RX_ER-free
    octets, minimum size and FCS checked coming out, FCS stripped."""

    def __init__(self, phy):
        self.phy = phy

    async def send(self, frame, port=0):
        assert port == 0
        await self.send_raw(wire_bytes(_pad(bytes(frame))))

    async def send_raw(self, octets):
        """Octets as the PHY puts them on RXD: preamble, SFD, frame, FCS."""
        await self.phy.rx.send(GmiiFrame(bytes(octets)))

    async def recv(self, port=0):
        assert port == 0
        try:
            frame = await with_timeout(self.phy.tx.recv(), WIRE_BUDGET_NS, "ns")
        except cocotb.triggers.SimTimeoutError:
            raise TimeoutError(f"no frame at the PHY within {WIRE_BUDGET_NS} ns") from None
        octets = bytes(frame.data)
        if frame.error is not None and any(frame.error):
            raise WireError(f"TX_ER during a frame: {octets.hex()}")
        if octets[:len(PREAMBLE)] != PREAMBLE:
            raise WireError(f"bad preamble/SFD: {octets[:8].hex()}")
        body, fcs = octets[len(PREAMBLE):-4], octets[-4:]
        if zlib.crc32(body).to_bytes(4, "little") != fcs:
            raise WireError(f"bad FCS {fcs.hex()} on {body.hex()}")
        if len(body) < MIN_FRAME:
            raise WireError(f"runt of {len(body)} bytes on the wire")
        return body

    def pending(self, port=0):
        return self.phy.tx.count()


class TB:
    """The board top (``hdl/board/sim.py``) with its PHY and its host.

    Clocks: ``sync`` and ``rgmii_tx`` at 125 MHz in phase, ``rgmii_tx90`` 2 ns
    later (as the PLL makes them), the PHY's receive clock free-running from
    the PHY model. Reset: ``pll_locked`` low, then high.
    """

    def __init__(self, dut):
        self.dut = dut
        self.log = logging.getLogger("cocotb.tb")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.")
        for sig in (dut.eth0_txd, dut.eth0_rxd):
            logging.getLogger(f"cocotb.{sig._path}").setLevel(logging.WARNING)
        dut.pll_locked.value = 0
        dut.rst.value = 0
        dut.uart_rx.value = 1
        self.baud = round(1e9 / (DIVISOR * CLOCK_NS))
        self.phy = RgmiiPhyCppClock(dut.eth0_txd, dut.eth0_tx_ctl, dut.eth0_tx_clk,
                                    dut.eth0_rxd, dut.eth0_rx_ctl, dut.eth0_rx_clk,
                                    speed=1000e6)
        self.uart = CocotbUartTransport(dut.uart_rx, dut.uart_tx, baud=self.baud)
        self.wire = PhyWire(self.phy)

    async def start_clocks(self):
        for sig in (self.dut.clk_sync, self.dut.clk_rgmii_tx):
            Clock(sig, CLOCK_NS, "ns", impl="gpi").start()
        await Timer(TX90_DELAY_NS, "ns")
        Clock(self.dut.clk_rgmii_tx90, CLOCK_NS, "ns", impl="gpi").start()

    async def reset(self, speed=1000):
        """The PLL loses lock and regains it; the PHY runs at ``speed`` Mb/s."""
        self.phy.set_speed(speed * 1e6)
        self.dut.pll_locked.value = 0
        await ClockCycles(self.dut.clk_sync, 8)
        self.dut.pll_locked.value = 1
        await ClockCycles(self.dut.clk_sync, 8)

    async def connect(self):
        """The driver's bus over the UART, as ``tlsnic`` opens a board."""
        return await SerialBus.connect(self.uart, bridge_idle=LINK_IDLE * CLOCK_NS * 1e-9,
                                       irq_timeout=0.02)

    async def board_state(self, bus):
        counters = {c.name: await bus.board_read(BoardReg.MAC_COUNTERS + 4 * c) for c in MacCounter}
        return {"mac": counters, "speed_mode": await bus.board_read(BoardReg.SPEED_MODE),
                "status": await bus.board_read(BoardReg.STATUS),
                "left_on_wire": self.phy.tx.count(), "uart": {"sent": self.uart.sent,
                                                              "received": self.uart.received}}


async def board_bad_fcs(dev, wire):
    """Board only: a frame with a bad FCS, a runt (40 bytes, good FCS), then a
    good frame, from the PHY. Only the good one may reach the host."""
    await dev.open(**RX_OPEN)
    rng = random.Random(5)
    bad, good = traffic.build("ipv4", "udp", 100, None, rng), traffic.build("ipv4", "tcp", 90, None, rng)
    runt = good[:40]
    await wire.send_raw(wire_bytes(bad, good_fcs=False))
    await wire.send_raw(wire_bytes(runt))
    await wire.send(good)
    rx = [(await dev.recv()).to_dict()]
    obs = {"sent": [bad.hex(), runt.hex(), good.hex()], "rx": rx,
           "rx_after": [f.to_dict() for f in await dev.poll_rx()]}
    return await scenarios._finish(dev, obs)


@cocotb.test()
async def board_batch(dut):
    """Every scenario of ``$TLSNIC_BOARD_BATCH``, each after a reset; results to ``$TLSNIC_RESULTS``."""
    import time
    import traceback
    batch = json.loads(os.environ["TLSNIC_BOARD_BATCH"])
    tb = TB(dut)
    await tb.start_clocks()
    results = {}
    for key, name, params, speed in batch:
        start = time.monotonic()
        await tb.reset(speed)
        phy_rst = int(dut.eth0_phy_rst.value)
        try:
            bus = await tb.connect()
            if speed != 1000:
                await bus.board_write(BoardReg.SPEED_MODE, SPEED_CODE[speed])
            before = {"sent": tb.uart.sent, "received": tb.uart.received}
            obs = await scenarios.run_scenario(_scenario(name), bus, tb.wire, **params)
            obs["board"] = await tb.board_state(bus)
            obs["board"]["uart"] = {k: obs["board"]["uart"][k] - before[k] for k in before}
        except Exception:
            obs = {"error": traceback.format_exc()}
        obs["phy_rst_after_reset"] = phy_rst
        obs["wall_s"] = round(time.monotonic() - start, 1)
        obs["sim_us"] = cocotb.utils.get_sim_time("us")
        results[key] = obs
        tb.log.warning("%s: %.1f s wall", key, obs["wall_s"])
    Path(os.environ["TLSNIC_RESULTS"]).write_text(json.dumps(results))


# --- pytest: build, run, check ---------------------------------------------------------------

#: Every test that needs the simulation (the batch check below does not).
def on_board(test):
    return pytest.mark.cosim(test)


@pytest.fixture(scope="module")
def board_results():
    from tlsnic.cosim.build import board_design
    from tlsnic.cosim.runner import CocotbRun
    run = CocotbRun(board_design(divisor=DIVISOR, link_idle=LINK_IDLE))
    test_dir = run.build_dir / f"run-board-{os.getpid()}"
    test_dir.mkdir(parents=True, exist_ok=True)
    out = test_dir / "results.json"
    batch = [(key, name, params, speed) for key, (name, params, speed) in BATCH.items()]
    here = str(Path(__file__).resolve().parent)
    run.test("test_board_cosim", test_dir=test_dir, extra_env={
        "TLSNIC_BOARD_BATCH": json.dumps(batch), "TLSNIC_RESULTS": str(out),
        "PYTHONPATH": os.pathsep.join([here] + [p for p in sys.path if p])})
    return json.loads(out.read_text())


class PaddedWire(Wire):
    """The model's wire seen as the PHY sees the card's: frames padded to 60 bytes."""

    def __init__(self, wire):
        self.wire = wire

    async def send(self, frame, port=0):
        await self.wire.send(_pad(bytes(frame)), port)

    async def recv(self, port=0):
        return _pad(await self.wire.recv(port))

    def pending(self, port=0):
        return self.wire.pending(port)


def _on_model(name, params):
    import asyncio
    from tlsnic.cosim.model import ReferenceNic
    from tlsnic.hdl.board.top import BOARD_NIC
    nic = ReferenceNic(tls=True, tx_contexts=BOARD_NIC["tx_contexts"],
                       rx_contexts=BOARD_NIC["rx_contexts"])
    return asyncio.run(scenarios.run_scenario(_scenario(name), nic, PaddedWire(nic.wire), **params))


def _json(value):
    return json.loads(json.dumps(value))


def _result(board_results, key):
    got = board_results[key]
    assert "error" not in got, got["error"]
    return got


def _check_model(key, got):
    name, params, _ = BATCH[key]
    want = _json(_on_model(name, params))
    got = {k: v for k, v in got.items()
           if k not in ("board", "wall_s", "sim_us", "phy_rst_after_reset")}
    for field in want:
        assert got[field] == want[field], f"{key}: {field} differs between the board and the model"
    assert got == want


def _check_mac(got, *, rx_ok, fcs_errors=0, runts=0):
    board = got["board"]
    wire_frames = sum(len(frames) for frames in got.get("wire", {}).values())
    mac = board["mac"]
    assert mac["TX_OK"] == wire_frames
    assert mac["RX_OK"] == rx_ok
    assert mac["RX_FCS_ERRORS"] == fcs_errors and mac["RX_RUNTS"] == runts
    assert all(mac[c] == 0 for c in ("RX_OVERSIZE", "RX_OVERFLOW", "RX_PHY_ERRORS",
                                     "TX_UNDERRUN", "TX_OVERSIZE"))
    assert board["left_on_wire"] == 0, "the card sent frames nobody asked for"
    assert got["phy_rst_after_reset"] == 1, "the PHY is held in reset after lock"


def test_batch_covers_the_issue():
    names = {name for name, _, _ in BATCH.values()}
    assert {"loopback", "tls_tx_stream", "tls_rx_card_stream", "board_bad_fcs"} <= names
    assert {speed for _, _, speed in BATCH.values()} == {1000, 100}


@on_board
@pytest.mark.parametrize("key", ["plain_1000", "plain_100"])
def test_plain_frames_both_ways(board_results, key):
    got = _result(board_results, key)
    _check_model(key, got)
    wire = [bytes.fromhex(f) for f in got["wire"]["0"]]
    sent = [bytes.fromhex(s["data"]) for s in got["sent"]]
    assert len(wire) == len(sent) == BATCH[key][1]["count"]
    # Checksums filled in by the card are Scapy's; the frames came back whole.
    assert wire == [traffic.recompute_checksums(f) for f in sent]
    assert [bytes.fromhex(r["data"]) for r in got["rx"]] == wire
    assert all(r["ip_csum"] == "GOOD" or r["l3_proto"] != "IPV4" for r in got["rx"])
    assert all(r["l4_csum"] == "GOOD" for r in got["rx"])
    _check_mac(got, rx_ok=len(wire))
    speed = BATCH[key][2]
    assert got["board"]["speed_mode"] == (0 if speed == 1000 else SPEED_CODE[speed])


@on_board
def test_tls_transmit(board_results, key="tls_tx"):
    from test_model_tls_tx_scenarios import _check_flows
    got = _result(board_results, key)
    _check_model(key, got)
    assert [f["mode"] for f in got["flows"]] == ["ifnet"], "the session must be offloaded"
    streams = _check_flows(got)          # AESGCM decrypts every record to what was written
    assert all(streams.values())
    assert all(c["status"] == "OK" for c in got["tx_completions"])
    _check_mac(got, rx_ok=0)


def _rx_oracle(version, key, iv, number, stream):
    """``stream`` with every record's ciphertext replaced by its plaintext
    (AESGCM, independently of the card and the model), and the byte ranges of
    the ciphertext."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    out, spans, pos = bytearray(stream), [], 0
    while pos < len(stream):
        header = stream[pos:pos + 5]
        length = int.from_bytes(header[3:5], "big")
        body = stream[pos + 5:pos + 5 + length]
        if version == "1.2":
            nonce = iv[:4] + body[:8]
            aad = number.to_bytes(8, "big") + header[:3] + (length - 24).to_bytes(2, "big")
            start, sealed = pos + 13, body[8:]
        else:
            nonce = bytes(a ^ b for a, b in zip(iv, number.to_bytes(12, "big")))
            aad, start, sealed = header, pos + 5, body
        plain = AESGCM(key).decrypt(nonce, sealed, aad)
        out[start:start + len(plain)] = plain
        spans.append((start, start + len(plain)))
        pos += 5 + length
        number += 1
    return bytes(out), spans


@on_board
def test_tls_receive(board_results, key="tls_rx"):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    got = _result(board_results, key)
    _check_model(key, got)
    params = BATCH[key][1]
    flow = scenarios_tls_rx_card.Flow(0, params["version"], params["cipher"], params["sizes"],
                                      number=5, mss=params["mss"])
    expect, spans = _rx_oracle(params["version"], flow.key, flow.iv, 5, flow.data)
    segments = flow.segments()
    assert len(got["rx"]) == len(segments)
    covered = set()
    for (offset, chunk), rx in zip(segments, got["rx"]):
        packet = Ether(bytes.fromhex(rx["data"]))
        payload = bytes(packet[TCP].payload)[:packet[IP].len - 40]
        assert rx["status"] == "OK" and rx["tls"] == "TRACKING" and not rx["auth_fail"], rx
        assert payload == expect[offset:offset + len(chunk)], f"segment at {offset}"
        covered |= set(range(offset + rx["dec_start"], offset + rx["dec_end"]))
    for start, end in spans:
        assert set(range(start, end)) <= covered, f"ciphertext [{start}, {end}) not decrypted"
    assert all(c["status"] == "OK" for c in got["tx_completions"])
    assert got["counters"]["rx_packets"] == len(segments)
    assert got["counters"]["rx_tls_records"] == len(params["sizes"])
    assert got["counters"]["rx_tls_auth_fail"] == 0
    _check_mac(got, rx_ok=len(segments))


@on_board
def test_bad_fcs_and_runt_dropped_and_counted(board_results):
    got = _result(board_results, "bad_fcs")
    good = bytes.fromhex(got["sent"][2])
    assert [bytes.fromhex(r["data"]) for r in got["rx"]] == [good]
    assert got["rx_after"] == [], "a damaged frame reached the host"
    _check_mac(got, rx_ok=1, fcs_errors=1, runts=1)
