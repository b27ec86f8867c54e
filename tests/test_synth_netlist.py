"""The netlist helpers of ``tlsnic.synth_core`` on a small hand-made Yosys JSON."""
import json

from tlsnic.synth_core import by_scope, fanout


def _netlist(tmp_path):
    # Two flip-flops (one under nic.tls_tx, one under nic.gcm.engine.aes), two
    # LUT4 (one with a named output, one anonymous) and a reset net to both LSRs.
    ff = lambda q, d: {"type": "TRELLIS_FF", "port_directions": {"Q": "output", "DI": "input", "LSR": "input"},
                       "connections": {"Q": [q], "DI": [d], "LSR": [9]}}
    lut = lambda z, a: {"type": "LUT4", "port_directions": {"Z": "output", "A": "input"},
                        "connections": {"Z": [z], "A": [a]}}
    mod = {
        "netnames": {
            "nic.tls_tx.ctx": {"bits": [2], "hide_name": 0},
            "nic.gcm.engine.aes.rk$12": {"bits": [3], "hide_name": 0},
            "nic.tls_tx.table.mem0_DIA2_PFUMX_Z_ALUT_LUT4_Z[1]": {"bits": [4], "hide_name": 0},
            "$abc$123$auto": {"bits": [5], "hide_name": 1},
            "rst": {"bits": [9], "hide_name": 0},
        },
        "cells": {"f0": ff(2, 4), "f1": ff(3, 5), "l0": lut(4, 2), "l1": lut(5, 3)},
    }
    path = tmp_path / "n.json"
    path.write_text(json.dumps({"modules": {"top": mod}}))
    return path


def test_by_scope_counts_cells_by_the_scope_of_their_output_net(tmp_path):
    path = _netlist(tmp_path)
    counts = by_scope(path, "top", depth=3)
    assert counts["FF"] == {"nic.tls_tx": 1, "nic.gcm.engine": 1}
    assert counts["LUT4"] == {"nic.tls_tx.table": 1, "(anon)": 1}
    deeper = by_scope(path, "top", depth=4, under="nic.gcm")
    assert deeper["FF"] == {"nic.gcm.engine.aes": 1}
    assert deeper["LUT4"] == {}                   # the only LUT under it has no name


def test_fanout_counts_the_inputs_a_net_drives(tmp_path):
    path = _netlist(tmp_path)
    assert fanout(path, "top", port="LSR") == [(2, "rst")]
