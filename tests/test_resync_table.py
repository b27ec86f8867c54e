"""The receive resync table (``driver/resync.py``), against a plain list of record starts.

The oracle is the uncompressed history: every ``(seq, record number)`` fed,
kept in a dict, with the table's documented limits (the last 32 runs of
equal length, at most 2048 records a run) applied by brute force.
"""

import random

import pytest

from tlsnic.driver.resync import NUM_MAX, RESYNC_MAX, ResyncTable
from tlsnic.driver.tcp import SEQ_MASK, seq_add


def feed(table, seq, number, lengths):
    """Feed records of ``lengths`` from ``seq``; return ``{seq: number}`` and the end seq."""
    starts = {}
    for length in lengths:
        table.add(seq, number, length)
        starts[seq] = number
        seq = seq_add(seq, length)
        number += 1
    return starts, seq


def runs_of(lengths, num_max=NUM_MAX):
    """The runs the table should hold for ``lengths`` fed without a discontinuity."""
    runs = []
    for length in lengths:
        if runs and runs[-1][0] == length and runs[-1][1] < num_max:
            runs[-1][1] += 1
        else:
            runs.append([length, 1])
    return runs


def test_empty_table_knows_nothing():
    table = ResyncTable()
    assert not table.active and table.lookup(0) is None and not table.covers(0)


def test_equal_lengths_compress_into_one_run():
    table = ResyncTable()
    starts, end = feed(table, 1000, 7, [16413] * 100)
    assert table.runs == [[16413, 100]]
    for seq, number in starts.items():
        assert table.lookup(seq) == number
    assert table.lookup(1000 + 5) is None, "inside a record is no record start"
    assert table.lookup(end) is None, "the next record start is not reached yet"
    assert table.lookup(999) is None
    assert table.next_seq == end


def test_a_length_change_splits_the_run():
    table = ResyncTable()
    lengths = [100, 100, 100, 29, 100, 100, 16413, 16413]
    starts, _ = feed(table, 0, 0, lengths)
    assert table.runs == [[100, 3], [29, 1], [100, 2], [16413, 2]]
    assert {seq: table.lookup(seq) for seq in starts} == starts
    # Offsets that are multiples of another run's length are not starts here.
    assert table.lookup(329 + 29) is None
    assert table.lookup(300 + 100) is None


def test_a_run_is_capped_at_num_max_records():
    table = ResyncTable()
    feed(table, 0, 0, [29] * (NUM_MAX + 3))
    assert table.runs == [[29, NUM_MAX], [29, 3]]
    assert table.lookup(29 * (NUM_MAX + 2)) == NUM_MAX + 2


def test_oldest_run_is_evicted_and_the_start_advances():
    table = ResyncTable()
    lengths = [30 + (i % 2) for i in range(RESYNC_MAX + 5)]   # every record a run
    starts, _ = feed(table, 5000, 100, lengths)
    assert len(table.runs) == RESYNC_MAX and table.evictions == 5
    ordered = list(starts.items())
    for seq, number in ordered[:5]:
        assert table.lookup(seq) is None, "evicted: older than the table"
    for seq, number in ordered[5:]:
        assert table.lookup(seq) == number
    assert (table.start_seq, table.start_record) == ordered[5]


def test_discontinuity_starts_over():
    table = ResyncTable()
    starts, end = feed(table, 0, 0, [200] * 4)
    table.add(end + 1, 4, 200)          # one byte missing in between
    assert table.resets == 1 and table.runs == [[200, 1]]
    assert table.lookup(0) is None and table.lookup(end + 1) == 4


def test_back_in_sync_empties_the_table():
    table = ResyncTable()
    _, end = feed(table, 0, 0, [200] * 4)
    table.add(end, 4, 0)
    assert not table.active and table.lookup(200) is None and table.resets == 1
    table.add(end, 4, 300)              # the next record starts a fresh table
    assert table.active and table.lookup(end) == 4 and table.runs == [[300, 1]]


@pytest.mark.parametrize("first", [SEQ_MASK - 250, SEQ_MASK - 16412, SEQ_MASK])
def test_seq_wrap_inside_the_table(first):
    table = ResyncTable()
    starts, end = feed(table, first, 2**32 - 2, [100, 100, 16413, 16413, 29])
    assert end < first, "the stream wrapped"
    assert {seq: table.lookup(seq) for seq in starts} == starts
    assert table.lookup(seq_add(first, 50)) is None
    assert table.lookup(seq_add(first, -100)) is None
    assert table.covers(seq_add(end, -1)) and not table.covers(end)


def test_random_streams_match_the_uncompressed_history():
    rng = random.Random(5)
    for _ in range(20):
        table = ResyncTable(max_entries=8, num_max=5)
        seq, number = rng.getrandbits(32), rng.getrandbits(40)
        lengths = [rng.choice((29, 29, 29, 100, 16413)) for _ in range(rng.randrange(1, 120))]
        starts, _ = feed(table, seq, number, lengths)
        runs = runs_of(lengths, num_max=5)
        kept = runs[-8:]
        assert table.runs == kept
        kept_records = sum(count for _, count in kept)
        expected = dict(list(starts.items())[-kept_records:])
        assert {s: table.lookup(s) for s in starts} == {
            s: expected.get(s) for s in starts}
        assert table.records == kept_records
