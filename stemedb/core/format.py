"""Byte format constants: the code twin of docs/format.md.

Everything is little-endian.  A change to anything here is a format change:
bump ``FORMAT_MINOR`` when old readers can still read the files, otherwise
``FORMAT_MAJOR`` (old files are then refused with both versions named).
"""
from __future__ import annotations

import struct

FORMAT_MAJOR = 1
FORMAT_MINOR = 0

# ---- WAL segment header (32 bytes) ----------------------------------------
SEGMENT_MAGIC = b"STEMEWAL"
# magic, major, minor, segment number, first seq, log id (8 random bytes), reserved;
# then a crc32c of those 36 bytes
SEGMENT_HEADER = struct.Struct("<8sHHIQ8sI")
SEGMENT_HEADER_SIZE = 40
assert SEGMENT_HEADER.size == SEGMENT_HEADER_SIZE - 4, SEGMENT_HEADER.size
SEGMENT_NAME = "segment-{:05d}.log"

# ---- record frame (20 bytes, then the payload) -----------------------------
# payload length, crc32c(type..payload end), type, flags, reserved, seq
FRAME = struct.Struct("<IIBBHQ")
FRAME_SIZE = FRAME.size  # 20
assert FRAME_SIZE == 20
MAX_PAYLOAD = 256 * 1024 * 1024
# named offsets inside a frame (the only place that knows them)
FRAME_LENGTH_OFF = 0     # uint32 payload length
FRAME_CRC_OFF = 4        # uint32 crc32c of the bytes from FRAME_CRC_FROM to the payload's end
FRAME_CRC_FROM = 8       # the checksum covers type, flags, reserved, seq and payload
FRAME_TYPE_OFF = 8       # uint8 record type
FRAME_FLAGS_OFF = 9      # uint8 flags
FRAME_RESERVED_OFF = 10  # uint16, zero
FRAME_SEQ_OFF = 12       # uint64 seq

# record types
REC_ASSERT = 1
REC_RETRACT = 2
REC_VOTE = 3
REC_EPOCH = 4
REC_OUTCOME = 5
RECORD_TYPES = {REC_ASSERT: "assert", REC_RETRACT: "retract", REC_VOTE: "vote",
                REC_EPOCH: "epoch", REC_OUTCOME: "outcome"}

# frame flags
FLAG_MORE = 0x01  # this record belongs to an atomic group that continues

# ---- assertion payload (fixed 76-byte head, then variable parts) ---------
# hash, recorded_at, timestamp, confidence, source_class, lifecycle, fields,
# reserved, path_len, pred_len, source_len, epoch_len, n_derived, value_len
ASSERT_HEAD = struct.Struct("<32sqqdBBBBHHHHHxxI")
ASSERT_HEAD_SIZE = ASSERT_HEAD.size
assert ASSERT_HEAD_SIZE == 76, ASSERT_HEAD_SIZE
ASSERT_RECORDED_AT_OFF = 32   # int64 recorded_at, right after the 32-byte hash (in the payload)
ASSERT_TIMESTAMP_OFF = 40     # int64 timestamp, after recorded_at
ASSERT_CONFIDENCE_OFF = 48    # float64 confidence, after timestamp
ASSERT_SOURCE_CLASS_OFF = 56  # uint8 source class rank (0 = regulatory)
F_SOURCE = 0x01
F_PARENT = 0x02
F_DERIVED = 0x04
F_EPOCH = 0x08
F_SIGNED = 0x10

# ---- index snapshot file -------------------------------------------------
SNAPSHOT_MAGIC = b"STEMESNP"
SNAPSHOT_HEADER = struct.Struct("<8sHHQ32s")  # magic, major, minor, meta length, blake3 of the rest
SNAPSHOT_NAME = "snapshot.idx"
# The snapshot's own minor version (its header's minor field): 1 added the
# lens columns (conf, rank, va, vb).  A snapshot of an older minor is not
# used: the store rebuilds its indexes from the WAL and writes a new one.
SNAPSHOT_MINOR = 1
# The value id of the va/vb columns (index.value_id): a canonical value of at
# most VALUE_INLINE bytes is its own id; a longer one's va has VALUE_HASHED
# in its low byte.
VALUE_INLINE = 15
VALUE_HASHED = 0xFF
