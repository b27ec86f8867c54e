"""The receive resync table: a compressed history of TLS record starts.

When the card loses track of a flow's records (a gap hid a header) it
searches the following payload for something that looks like a record
header and reports each candidate's TCP sequence number. It may only resume
decrypting once the driver confirms that a record really starts there, and
says which record it is. The driver answers from this table, fed by the TLS
layer with every record boundary it crosses.

The layout is mlx5's (FreeBSD ``mlx5_en_hw_tls_rx.c``,
``mlx5e_tls_rx_snd_tag_add_tcp_sequence`` and
``mlx5e_tls_rx_snd_tag_find_tcp_sn_and_tls_rcd``): a ring of
:data:`RESYNC_MAX` entries, each a run of up to :data:`NUM_MAX` consecutive
records of one length, plus the TCP seq and record number of the oldest
record kept. Bulk transfers send records of one size, so 32 entries usually
cover 65536 records; a stream of ever-changing sizes covers only 32. When the
ring is full the oldest run is evicted and the start advanced past it. A
record that does not start where the previous one ended (the TLS layer
skipped or lost bytes), or a length of 0 (the "back in sync" report of
FreeBSD ``ktls_resync_ifnet``), starts the table over.

``32 * 2048`` records of 16 KiB are 1 GiB (mlx5 checks that bound at compile
time); even of the largest record, ``2**14 + 256 + 8 + 5`` bytes, they stay
below ``2**31``, so serial arithmetic places every seq of the table
unambiguously across the 32-bit wrap.
"""

from .tcp import SEQ_MASK, seq_add, seq_sub

__all__ = ["RESYNC_MAX", "NUM_MAX", "ResyncTable"]

#: Entries in the ring (mlx5 ``MLX5E_TLS_RX_RESYNC_MAX``); a power of two.
RESYNC_MAX = 32
#: Records one entry counts at most (mlx5 ``MLX5E_TLS_RX_NUM_MAX``).
NUM_MAX = 2048
#: Largest record on the wire: header, TLS 1.2 explicit nonce, 2**14 + 256.
_MAX_RECORD = 5 + 8 + (1 << 14) + 256
assert RESYNC_MAX * NUM_MAX * _MAX_RECORD < 1 << 31, "table could span half the seq space"


class ResyncTable:
    """Record starts of one receive stream, compressed in runs of equal length.

    Attributes
    ----------
    active : bool
        The table holds records (mlx5 ``tcp_resync_active``).
    start_seq, start_record : int
        TCP seq and record number of the oldest record held.
    next_seq : int
        Where the record after the newest one held starts.
    runs : list[list[int]]
        ``[length, count]`` per entry, oldest first (at most :data:`RESYNC_MAX`).
    evictions, resets : int
        Runs evicted to make room; times the table started over.
    """

    def __init__(self, max_entries=RESYNC_MAX, num_max=NUM_MAX):
        self.max_entries = max_entries
        self.num_max = num_max
        self.active = False
        self.start_seq = self.start_record = self.next_seq = 0
        self.runs = []
        self.evictions = 0
        self.resets = 0

    def add(self, seq, record_number, length):
        """Note that record ``record_number`` starts at ``seq`` and is ``length`` bytes long.

        Records come in stream order. ``length`` is the whole record on the
        wire, header included; 0 means "back in sync" and empties the table.
        A record not starting at :attr:`next_seq` starts the table over
        with itself (the history before a discontinuity cannot be trusted
        to match the seq space any more). Returns :attr:`active`.
        """
        seq &= SEQ_MASK
        if not self.active or seq != self.next_seq or length == 0:
            if self.active:
                self.resets += 1
            self.active = length != 0
            self.runs = [[length, 1]] if length else []
            self.start_seq, self.start_record = seq, record_number
        elif self.runs[-1][0] == length and self.runs[-1][1] < self.num_max:
            self.runs[-1][1] += 1
        else:
            if len(self.runs) == self.max_entries:
                # Evict the oldest run: the start moves past its records.
                old_length, old_count = self.runs.pop(0)
                self.start_seq = seq_add(self.start_seq, old_length * old_count)
                self.start_record += old_count
                self.evictions += 1
            self.runs.append([length, 1])
        self.next_seq = seq_add(seq, length)
        return self.active

    def lookup(self, seq):
        """The number of the record starting at ``seq``, or None.

        None when ``seq`` is older than the table (evicted, or before a
        reset), not at a record start, or at or past :attr:`next_seq` (not
        reached yet: the caller knows whether the stream went past it).
        """
        if not self.active:
            return None
        delta = seq_sub(seq, self.start_seq)
        if delta < 0:
            return None
        record = self.start_record
        for length, count in self.runs:
            span = length * count
            if delta < span:
                return record + delta // length if delta % length == 0 else None
            delta -= span
            record += count
        return None

    @property
    def records(self):
        """Records the table covers."""
        return sum(count for _, count in self.runs)

    def covers(self, seq):
        """``seq`` lies in ``[start_seq, next_seq)``: the table can say whether a record starts there."""
        return self.active and 0 <= seq_sub(seq, self.start_seq) < seq_sub(self.next_seq,
                                                                             self.start_seq)
