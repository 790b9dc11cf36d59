"""TFRecord framing without TensorFlow: what `tf.io.TFRecordWriter` writes around each record.

A record is its length (uint64, little-endian), the masked CRC-32C of those 8 bytes (uint32), the
data, and the masked CRC-32C of the data (TensorFlow's `core/lib/io/record_writer.cc` and
`core/lib/hash/crc32c.h`). The payload logger frames a whole batch of records itself and writes
it with one `write()`: TensorFlow's writer releases and retakes the GIL on every record, which
at 100 % sampling traded the GIL with the serving thread once per request. The checksum comes
from `google-crc32c` (the C library, hardware CRC instructions where the CPU has them).
"""

from __future__ import annotations

from typing import Any

import google_crc32c

_MASK_DELTA = 0xA282EAD8
OVERHEAD = 16  # bytes of framing around each record


def masked_crc32c(data: Any) -> bytes:
    """The masked CRC-32C of `data` (bytes or a buffer), as the 4 bytes a TFRecord stores."""
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF).to_bytes(4, "little")


def frame_parts(data: Any) -> tuple[bytes, bytes]:
    """The bytes before and after `data` in its TFRecord (so `data` itself is not copied here)."""
    length = len(data).to_bytes(8, "little")
    return length + masked_crc32c(length), masked_crc32c(data)


def frame(data: Any) -> bytes:
    """One whole TFRecord."""
    head, tail = frame_parts(data)
    return b"".join((head, data, tail))
