"""The board's host link: a framed request/response protocol over a UART.

The gateware side is :class:`tlsnic.hdl.board.uart_bridge.UartBridge`; the
host side is :class:`tlsnic.driver.serial_bus.SerialBus`. Both use the
constants and the CRC defined here, so this docstring is the protocol's
definition.

Frames
------

A request is a header, and for writes a data block::

    cmd  seq  addr[4] len[2]  hcrc[2]          (header, 10 bytes)
    data[len]  dcrc[2]                          (writes only)

A response::

    status  seq  data[len]  crc[2]              (data only for a successful read)

* Multi-byte fields are little-endian; each CRC is CRC-16/CCITT-FALSE
  (poly 0x1021, preset 0xFFFF, :func:`binascii.crc_hqx`) over the bytes before
  it in its block (``hcrc`` over the header, ``dcrc`` over ``data``, the
  response CRC over status, seq and data), sent most significant byte first,
  so the CRC over a block *including* its CRC is zero.
* ``seq`` is the host's and is echoed, so a late answer to an abandoned request
  is never taken for the answer to the next one.
* ``addr`` is a CSR byte address (:class:`Cmd` ``CSR_*``), an offset into the
  host-memory window (``MEM_*``), or a board register (``BOARD_*``,
  :class:`BoardReg`). ``len`` is 4 for CSR and board registers, and
  1..:data:`MAX_MEM` for memory.

Loss and corruption
-------------------

Nothing on either side ever waits without a limit:

* The header has its own CRC and is checked before anything is done, so a
  corrupted address or length never reaches the bus. A write's data are
  checked by ``dcrc``; memory writes land as they arrive (the window holds no
  copy), so a failed data check means the range itself may hold garbage, and
  the host writes it again. No other byte can have changed.
* The bridge answers every request it could not carry out *after the line has
  been quiet* for ``idle`` clocks (:data:`Status` ``BAD_CRC``,
  ``BAD_REQUEST``): whatever of a damaged request is still in flight is
  swallowed, and the next request starts from a clean state. A request that
  stops arriving half-way is answered ``TIMEOUT`` after the same quiet time.
* The host checks every answer's CRC and seq and, on anything wrong or
  missing, waits for the line to go quiet and repeats the request. Repeating is
  safe because every operation the driver issues is idempotent: reads have no
  side effects on this card, producer-index doorbells carry absolute values,
  ``IRQ_STATUS`` is write-one-to-clear, memory writes overwrite.
"""

import binascii
import enum
import struct

__all__ = ["Cmd", "Status", "BoardReg", "MAX_MEM", "HEADER_BYTES", "BOARD_ID",
           "crc16", "encode_request", "encode_response", "LinkStatusBits"]

#: Largest memory transfer in one request.
MAX_MEM = 256
HEADER_BYTES = 10
#: ``BoardReg.ID``: "TLSB".
BOARD_ID = 0x42534C54


class Cmd(enum.IntEnum):
    CSR_READ = 0x01
    CSR_WRITE = 0x02
    MEM_READ = 0x03
    MEM_WRITE = 0x04
    BOARD_READ = 0x05
    BOARD_WRITE = 0x06


WRITES = (Cmd.CSR_WRITE, Cmd.MEM_WRITE, Cmd.BOARD_WRITE)


class Status(enum.IntEnum):
    OK = 0x00
    BAD_CRC = 0x01       #: a CRC failed, or a UART framing error: resend
    TIMEOUT = 0x02       #: the request stopped arriving half-way: resend
    BAD_REQUEST = 0x03   #: unknown command, bad length, range outside the window
    BUS_ERROR = 0x04     #: the CSR port answered SLVERR, or did not answer


class BoardReg(enum.IntEnum):
    """Board registers (``BOARD_READ`` / ``BOARD_WRITE``), 32 bits each."""
    ID = 0x00            #: RO, :data:`BOARD_ID`
    STATUS = 0x04        #: RO, :class:`LinkStatusBits` of port 0; bit 0 the NIC's IRQ line
    WINDOW_BASE_LO = 0x08  #: RO, DMA address of the host-memory window
    WINDOW_BASE_HI = 0x0C
    WINDOW_SIZE = 0x10   #: RO, bytes
    SPEED_MODE = 0x14    #: RW, 0 = from the PHY's in-band status (1000 if none), 1 = 10, 2 = 100, 3 = 1000 Mb/s
    PORTS = 0x18         #: RO, Ethernet ports
    #: Port ``p``'s MAC counters (:class:`tlsnic.hdl.board.mac.MacCounter`) at
    #: ``MAC_COUNTERS + 0x40 * p + 4 * counter``.
    MAC_COUNTERS = 0x100


class LinkStatusBits(enum.IntFlag):
    IRQ = 1 << 0
    LINK = 1 << 1        #: in-band status: link up
    SPEED_SHIFT = 2      #: bits 3:2, the speed in effect (0 = 10, 1 = 100, 2 = 1000)
    FULL_DUPLEX = 1 << 4


def crc16(data, crc=0xFFFF):
    return binascii.crc_hqx(bytes(data), crc)


def _with_crc(block):
    return bytes(block) + crc16(block).to_bytes(2, "big")


def encode_request(cmd, seq, addr, length, data=b""):
    """Bytes of one request; ``data`` for writes (``len(data) == length``)."""
    header = _with_crc(struct.pack("<BBIH", int(cmd), seq & 0xFF, addr & 0xFFFF_FFFF, length))
    if Cmd(cmd) in WRITES:
        assert len(data) == length
        return header + _with_crc(data)
    return header


def encode_response(status, seq, data=b""):
    """Bytes of one response (what the bridge sends)."""
    return _with_crc(bytes([int(status), seq & 0xFF]) + bytes(data))
