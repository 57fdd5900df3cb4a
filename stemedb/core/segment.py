"""One WAL segment file: header, appends, reads, torn-tail cut, check().

A segment is ``wal/segment-NNNNN.log``: a 40-byte header (docs/format.md)
then framed records.  The active segment is appended to through the file
layer; every segment's records are read with ``pread``.  A scan of a whole
sealed segment (recovery's) reads it through a read-only ``mmap``
(:meth:`Segment.buffer`), dropped once the scan is done (:meth:`Segment.unmap`).

Why records are not read through a mapping (docs/design.md, "Memory"): a
page fault on a file mapping maps the pages around it too (Linux's fault-
around, 64 KiB, or the whole page-cache folio, which is as large as the
write that made it: up to ~1 MiB for the WAL's), and no advice turns that
off for one mapping (``MADV_RANDOM`` does not).  A query reads a few
~250-byte records scattered over the log, so after a few thousand queries
every page of every sealed segment was mapped, counted in the process's
RSS: the whole WAL, ~231 bytes per assertion and growing with it.  A
``pread`` copies the same bytes out of the same page cache and maps
nothing; it costs a system call a record (measured in
bench/results/rss-2026-11-27-session12.md).
"""
from __future__ import annotations

import mmap
import os
import secrets

import google_crc32c

from ..errors import BadMagic, CorruptionError, UnsupportedFormat
from .fileio import FileSystem
from .format import (
    FORMAT_MAJOR, FORMAT_MINOR, SEGMENT_HEADER, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC,
    SEGMENT_NAME,
)


def new_log_id() -> bytes:
    return secrets.token_bytes(8)


def encode_header(number: int, first_seq: int, log_id: bytes) -> bytes:
    # the last 4 bytes of the struct are reserved (0); the crc follows them
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_MAJOR, FORMAT_MINOR, number, first_seq,
                               log_id, 0)
    return head + google_crc32c.value(head).to_bytes(4, "little")


def read_header(path: str) -> tuple[int, int, bytes]:
    """``(number, first_seq, log_id)`` of a segment; raises on a bad header."""
    with open(path, "rb") as f:
        raw = f.read(SEGMENT_HEADER_SIZE)
    if len(raw) < SEGMENT_HEADER_SIZE or raw[:8] != SEGMENT_MAGIC:
        raise BadMagic(f"WAL magic byte validation failed: {path}", file=path, offset=0)
    magic, major, minor, number, first_seq, log_id, _ = SEGMENT_HEADER.unpack(raw[:36])
    crc = int.from_bytes(raw[36:40], "little")
    if google_crc32c.value(raw[:36]) != crc:
        raise BadMagic(f"WAL magic byte validation failed: {path} (header checksum)",
                       file=path, offset=0)
    if major != FORMAT_MAJOR:
        raise UnsupportedFormat(
            f"WAL segment {path} has format version {major}.{minor}; this StemeDB reads "
            f"version {FORMAT_MAJOR}.x", file=path, offset=0)
    return number, first_seq, log_id


class Segment:
    """A segment's identity and read access.  Appends go through the WAL."""

    def __init__(self, path: str, number: int, first_seq: int, log_id: bytes, size: int):
        self.path = path
        self.name = os.path.basename(path)
        self.number = number
        self.first_seq = first_seq
        self.log_id = log_id
        self.size = size            # bytes known valid (header + whole records)
        self.sealed = False
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._map: mmap.mmap | None = None

    @classmethod
    def create(cls, fs: FileSystem, wal_dir: str, number: int, first_seq: int,
               log_id: bytes) -> "Segment":
        """Create a new segment durably: temp file, header, fsync, rename, dir fsync.

        A crash at any step leaves either no segment or a complete header.
        """
        path = os.path.join(wal_dir, SEGMENT_NAME.format(number))
        tmp = path + ".tmp"
        f = fs.open_append(tmp)
        try:
            f.truncate(0)
            f.write(encode_header(number, first_seq, log_id))
            f.sync()
        finally:
            f.close()
        fs.rename(tmp, path)
        fs.fsync_dir(wal_dir)
        return cls(path, number, first_seq, log_id, SEGMENT_HEADER_SIZE)

    def seal(self) -> None:
        """No more appends (the size is final: a scan may map it)."""
        self.sealed = True

    def buffer(self):
        """A read-only buffer over the valid bytes, for a scan of the whole
        segment: a sealed one mapped (kept until :meth:`unmap`), any other
        read into the heap."""
        if self._map is not None:
            return self._map
        if self.sealed and self.size > 0:
            self._map = mmap.mmap(self._fd, self.size, prot=mmap.PROT_READ)
            return self._map
        return os.pread(self._fd, self.size, 0)

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of the file)."""
        return os.pread(self._fd, length, offset)

    def unmap(self) -> None:
        """Drop the mapping :meth:`buffer` made, and its pages from this
        process's RSS (they stay in the page cache); reads go on by pread."""
        m, self._map = self._map, None
        if m is None:
            return
        try:
            m.close()
        except BufferError:
            # a view of it is still alive (the GC unmaps it with the last
            # one): drop the pages now; a shared read-only mapping has no
            # changes to lose, a later touch reads them back from the cache
            m.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self.unmap()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def check(self) -> list[str]:
        """Findings about this segment's header and size (empty when fine)."""
        out = []
        try:
            number, first_seq, log_id = read_header(self.path)
        except CorruptionError as exc:
            return [str(exc)]
        if number != self.number:
            out.append(f"{self.name}: header says segment {number}")
        if os.path.getsize(self.path) < self.size:
            out.append(f"{self.name}: file shorter than the {self.size} bytes indexed")
        return out
