"""``tlsnic synth --core``'s device choice: Lattice part names to nextpnr-ecp5 flags."""

import pytest

from tlsnic import synth_core


def test_every_part_maps_to_its_nextpnr_flag():
    for part, flag in synth_core.DEVICES.items():
        family, size = part.split("-")
        assert flag.endswith(size[:-1] + "k")
        assert flag.startswith({"LFE5UM5G": "um5g-", "LFE5UM": "um-", "LFE5U": ""}[family])


def test_a_um5g_part_in_a_slower_grade_is_refused_before_any_build(monkeypatch, capsys):
    monkeypatch.setattr(synth_core, "build", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(SystemExit):
        synth_core.main(["--core", "gcm", "--device", "LFE5UM5G-85F", "--speed", "6"])
    assert "speed grade 8 only" in capsys.readouterr().err


def test_heatmaps_are_refused_for_router1(monkeypatch, capsys):
    monkeypatch.setattr(synth_core, "build", lambda *a, **k: pytest.fail("built"))
    with pytest.raises(SystemExit):
        synth_core.main(["--core", "gcm", "--heatmap", "--router", "router1"])
    assert "router2" in capsys.readouterr().err
