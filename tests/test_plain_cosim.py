"""The plain packet path on the gateware, compared with the reference model.

Every scenario of ``cosim/scenarios.py`` runs on the reference model and on the
NIC's Verilog under cocotb; the observations (wire frames, completions raw
bytes, delivered frames, counters) must be identical. The scenarios themselves
are checked against independent oracles (Scapy) in ``test_model_plain.py``;
this file proves the gateware *is* that model.

The whole batch runs in one simulation (per TB configuration), so these tests
share a module fixture; run them in one pytest worker (``--dist loadfile``).
"""

import shutil

import pytest

from tlsnic.cosim.scenarios import SCENARIOS, MULTI_PORT, run_on_model
from tlsnic.cosim.cocotb_scenarios import run_on_gateware

pytestmark = pytest.mark.cosim

#: TB configurations: plain, and with random idle cycles on the RX stream
#: source plus random back-pressure on the TX stream sink.
STRESS = {"idle": True, "backpressure": True, "seed": 7}
STRESSED = ("tx_sizes", "tx_ring_full", "rx_backpressure", "loopback", "many_in_flight", "jumbo")


SINGLE_PORT = [name for name in SCENARIOS if name not in MULTI_PORT]


@pytest.fixture(scope="module")
def gateware():
    batch = [(name, name, {}) for name in SINGLE_PORT]
    return run_on_gateware(batch)


@pytest.fixture(scope="module")
def gateware_two_ports():
    # The plain scenarios again on a two-port card (they use port 0), plus
    # the multi-port ones.
    batch = [(name, name, {}) for name in ("loopback", "rx_truncation", *MULTI_PORT)]
    return run_on_gateware(batch, ports=2, tag="ports2")


@pytest.fixture(scope="module")
def gateware_stressed():
    batch = [(name, name, {}) for name in STRESSED]
    return run_on_gateware(batch, tb_options=STRESS, tag="stress")


def _compare(name, got, ports=1):
    assert "error" not in got, got["error"]
    want = run_on_model(name, ports=ports)
    for key in want:
        assert got[key] == want[key], f"{name}: {key} differs between gateware and model"
    assert got == want


@pytest.mark.parametrize("name", SINGLE_PORT)
def test_gateware_matches_model(name, gateware):
    _compare(name, gateware[name])


@pytest.mark.parametrize("name", ("loopback", "rx_truncation", *MULTI_PORT))
def test_two_port_gateware_matches_model(name, gateware_two_ports):
    _compare(name, gateware_two_ports[name], ports=2)


@pytest.mark.parametrize("name", STRESSED)
def test_gateware_matches_model_under_backpressure(name, gateware_stressed):
    _compare(name, gateware_stressed[name])


#: Icarus checks, under the ``slow`` marker (``pytest -m slow -k icarus``):
#: Icarus is an optional second simulator, and slower than Verilator.
#: The card with TlsTx once seemed to hang at time 0 under Icarus: it was
#: TlsTx's outputs stuck at ``x`` (see ``cosim.runner.ICARUS_ARGS`` and
#: ``cosim.build.icarus_fixups``); both tests pass now.
ICARUS_SUBSET = ("bring_up", "tx_bad_descriptors")
ICARUS_SLOW_SUBSET = ("loopback", "rx_truncation")


def _icarus(names, tag):
    got = run_on_gateware([(n, n, {}) for n in names], sim="icarus", tag=tag)
    for name in names:
        _compare(name, got[name])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog not installed (optional)")
def test_icarus_matches_model():
    """The same Verilog under Icarus (cocotb's other simulator) gives the same answers."""
    _icarus(ICARUS_SUBSET, "icarus")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog not installed (optional)")
def test_icarus_matches_model_with_traffic():
    _icarus(ICARUS_SLOW_SUBSET, "icarus-slow")
