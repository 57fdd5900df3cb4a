"""The file layer, injectable so tests can fail an fsync or drop unsynced
bytes without monkey-patching (STYLE principle 8).

The engine writes only through a :class:`FileSystem`; the default is the
real one.  Reads of segments go straight to ``pread`` (and recovery's scan
of a sealed segment to a read-only mapping: segment.py); a read cannot lose
data.
"""
from __future__ import annotations

import errno
import os


def no_space(path: str, need: int) -> OSError:
    """ENOSPC that names the file, the bytes it needed and the bytes free."""
    try:
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
        free = f"{st.f_bavail * st.f_frsize:,} bytes are free there"
    except OSError:
        free = "the free space could not be read"
    return OSError(errno.ENOSPC, f"No space left on device writing {path}: it needs "
                                 f"{need:,} bytes and {free}; free space on that file "
                                 f"system (see docs/operations/runbooks/disk-full.md)", path)


ZERO_PIECE = 1 << 20       # zero_fill writes at most this much at a time


class File:
    """An open file for appending."""

    def __init__(self, fs: "FileSystem", path: str, fd: int):
        self.fs = fs
        self.path = path
        self.fd = fd

    def write(self, data) -> None:
        """Write all of ``data`` at the end of the file (not yet durable)."""
        n = os.write(self.fd, data)
        if n < len(data):   # a short write (rare: a signal, a full pipe): the rest
            view = memoryview(data)[n:]
            while view:
                n = os.write(self.fd, view)
                view = view[n:]

    def sync(self) -> None:
        """Make everything written so far durable (fdatasync)."""
        os.fdatasync(self.fd)

    def sync_all(self) -> None:
        """Make the data and the file's size durable (fsync): after a
        ``truncate`` that shortens the file, whose new size ``sync`` (an
        fdatasync) need not write."""
        os.fsync(self.fd)

    def zero_fill(self, start: int, end: int) -> None:
        """Write zeros over ``[start, end)`` (not yet durable) without moving
        the append position: the WAL's preallocated space (docs/design.md)."""
        zeros = bytes(min(end - start, ZERO_PIECE))
        view = memoryview(zeros)
        pos = start
        while pos < end:
            pos += os.pwrite(self.fd, view[:end - pos], pos)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)
        os.lseek(self.fd, size, os.SEEK_SET)

    def seek(self, offset: int) -> None:
        """Move the append position (onto preallocated zeros kept at open)."""
        os.lseek(self.fd, offset, os.SEEK_SET)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileSystem:
    """The operations the engine uses to change files."""

    file_class = File

    def open_append(self, path: str) -> File:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        os.lseek(fd, 0, os.SEEK_END)
        return self.file_class(self, path, fd)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def write_atomic(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` so that a crash leaves old or new.

        Written to a temp file, fsynced, renamed over, directory fsynced.
        """
        tmp = path + ".tmp"
        f = self.open_append(tmp)
        try:
            f.truncate(0)
            f.write(data)
            f.sync()
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise no_space(path, len(data)) from exc
            raise
        finally:
            f.close()
        self.rename(tmp, path)
        self.fsync_dir(os.path.dirname(os.path.abspath(path)))

    def makedirs(self, path: str) -> None:
        if not os.path.isdir(path):
            os.makedirs(path, exist_ok=True)
            self.fsync_dir(os.path.dirname(os.path.abspath(path)))
