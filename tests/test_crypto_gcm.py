"""GCM engine under cocotb + Verilator, against NIST CAVP vectors and ``cryptography``'s AESGCM.

Each test writes a job file (records plus driver knobs) and runs
``tests/cocotb/tb_gcm.py`` on the engine; the testbench checks every output
byte, every saved-state round trip and every tag, and fails the run on the
first mismatch.
"""

import json
import random
import sys
from pathlib import Path

import pytest

from tlsnic.bench_gcm import Record, engine_run

TB_DIR = Path(__file__).resolve().parent / "cocotb"


def _nist(name):
    """Vectors with a 96-bit IV and a 128-bit tag from one CAVP ``.rsp`` file."""
    import cryptography_vectors
    path = Path(cryptography_vectors.__file__).parent / "ciphers" / "AES" / "GCM" / name
    vecs, cur, hdr = [], None, {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            k, _, v = line[1:-1].partition(" = ")
            hdr[k] = int(v)
            continue
        if not line or line.startswith("#"):
            continue
        if line.startswith("Count"):
            cur = {"FAIL": False}
            if hdr.get("IVlen") == 96 and hdr.get("Taglen") == 128:
                vecs.append(cur)
            continue
        if line == "FAIL":
            cur["FAIL"] = True
            continue
        k, _, v = line.partition("=")
        cur[k.strip()] = bytes.fromhex(v.strip())
    return vecs


def _nist_records(name, rng):
    recs = []
    for n, v in enumerate(_nist(name)):
        hgen = rng.random() < 0.5
        tag = "decrypt" if "Decrypt" in name else "encrypt"
        label = f"{name}#{n}"
        if tag == "encrypt":
            recs.append(Record(v["Key"], v["IV"], v["AAD"], v["PT"], False, bytes(16), v["CT"],
                               v["Tag"], True, None, hgen, label))
        else:
            # FAIL vectors carry no plaintext: the bytes are not checked, the tag must fail.
            recs.append(Record(v["Key"], v["IV"], v["AAD"], v["CT"], True, v["Tag"],
                               None if v["FAIL"] else v["PT"], None, not v["FAIL"], None, hgen,
                               label))
    return recs


def _run(tmp_path, runs, **engine):
    sys.path.insert(0, str(TB_DIR))
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([dict(r, records=[x.to_json() for x in r["records"]]) for r in runs]))
    engine_run(**engine).test("tb_gcm", test_dir=tmp_path / "run",
                              extra_env={"TLSNIC_GCM_JOBS": str(jobs)})


def _knobs(seed, **kw):
    d = dict(seed=seed, gap=0.0, backpressure=0.0, chunking="full", segment=0.0, interleave=1)
    d.update(kw)
    return d


@pytest.mark.cosim
@pytest.mark.parametrize("name", ["gcmEncryptExtIV128.rsp", "gcmEncryptExtIV256.rsp",
                                  "gcmDecrypt128.rsp", "gcmDecrypt256.rsp"])
def test_nist_cavp(tmp_path, name):
    rng = random.Random(name)
    recs = _nist_records(name, rng)
    assert len(recs) >= 375
    if "Decrypt" in name:
        assert any(not r.expect_ok for r in recs) and any(r.expect_ok for r in recs)
    # Half of them back to back in 16-byte chunks, the rest cut up, with gaps,
    # back-pressure and save/restore between interleaved records.
    half = len(recs) // 2
    _run(tmp_path, [
        dict(_knobs(1), records=recs[:half], name="full"),
        dict(_knobs(2, gap=0.2, backpressure=0.2, chunking="random", segment=0.2, interleave=3),
             records=recs[half:], name="random"),
    ])


def _random_records(rng, n, max_text, seek=False, big=()):
    recs = []
    for i in range(n):
        key = rng.randbytes(rng.choice((16, 32)))
        aad = rng.randbytes(rng.choice((0, 5, 13, rng.randrange(65))))
        size = big[i] if i < len(big) else rng.randrange(max_text + 1)
        pt = rng.randbytes(size)
        dec = rng.random() < 0.5
        corrupt = dec and rng.random() < 0.3
        off = rng.randrange(size + 1) if seek and size else None
        recs.append(Record.make(key, rng.randbytes(12), aad, pt, decrypt=dec,
                                corrupt=corrupt and off is None, seek=off,
                                hgen=rng.random() < 0.5, name=f"rand{i}"))
    return recs


@pytest.mark.cosim
def test_random_small_records(tmp_path):
    """Short records: AAD 0-64 B, data 0-300 B, every knob on."""
    rng = random.Random(11)
    _run(tmp_path, [
        dict(_knobs(3, gap=0.3, backpressure=0.3, chunking="random", segment=0.25, interleave=4),
             records=_random_records(rng, 120, 300), name="small-random"),
        dict(_knobs(4, gap=0.1, backpressure=0.5, chunking="net", segment=0.1, interleave=2),
             records=_random_records(rng, 60, 300), name="small-net"),
    ])


@pytest.mark.cosim
def test_random_seek(tmp_path):
    """Records entered at a random TEXT offset: keystream right, tag reported not computable."""
    rng = random.Random(12)
    _run(tmp_path, [
        dict(_knobs(5, gap=0.2, backpressure=0.2, chunking="random", segment=0.2, interleave=3),
             records=_random_records(rng, 80, 2048, seek=True), name="seek"),
    ])


@pytest.mark.cosim
def test_random_big_records(tmp_path):
    """Records up to 17 KB (and exactly 2^14 + 256 B) through the 8-byte network chunking."""
    rng = random.Random(13)
    _run(tmp_path, [
        dict(_knobs(6, gap=0.2, backpressure=0.2, chunking="net", segment=0.01, interleave=2),
             records=_random_records(rng, 4, 17 * 1024, big=(2 ** 14 + 256, 17 * 1024)),
             name="big-net"),
        dict(_knobs(7, chunking="full", segment=0.02, interleave=3),
             records=_random_records(rng, 4, 17 * 1024, big=(2 ** 14 + 256,)), name="big-full"),
    ])


@pytest.mark.cosim
def test_shared_engine_two_users(tmp_path):
    """Two users on one engine (``GcmShare``), each with its own records, segments
    and back-pressure: every byte, saved state and tag right for both."""
    from tlsnic.cosim.build import Design
    from tlsnic.cosim.runner import CocotbRun
    sys.path.insert(0, str(TB_DIR))
    rng = random.Random(14)
    runs = [
        dict(_knobs(7, gap=0.3, backpressure=0.2, chunking="net", segment=0.2, interleave=3),
             records=_random_records(rng, 60, 600)),
        dict(_knobs(8, gap=0.1, backpressure=0.3, chunking="random", segment=0.1, interleave=2),
             records=_random_records(rng, 60, 600, seek=True)),
    ]
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([dict(r, records=[x.to_json() for x in r["records"]]) for r in runs]))
    CocotbRun(Design("tlsnic.hdl.crypto.share:make_share", "gcm_share")).test(
        "tb_gcm_share", test_dir=tmp_path / "run", extra_env={"TLSNIC_GCM_JOBS": str(jobs)})


@pytest.mark.cosim
def test_board_rate_engine(tmp_path):
    """The boards' engine (``aes_cores=4``: four iterative AES cores, a slot
    every 4 clocks, the digit-serial GHASH multiply): the NIST vectors of both
    sizes and random records with seeks, segments, gaps and back-pressure, the
    same checks as the full-rate engine."""
    rng = random.Random(15)
    nist = [r for name in ("gcmEncryptExtIV128.rsp", "gcmDecrypt256.rsp")
            for r in _nist_records(name, rng)[::4]]
    _run(tmp_path, [
        dict(_knobs(9), records=nist, name="nist"),
        dict(_knobs(10, gap=0.2, backpressure=0.2, chunking="random", segment=0.2, interleave=3),
             records=_random_records(rng, 60, 600, seek=True), name="random"),
    ], aes_cores=4)
