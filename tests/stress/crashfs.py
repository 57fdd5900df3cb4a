"""CrashFS: a file layer that knows what fsync made durable and can simulate
a power cut by rewriting the data directory to a state a disk could hold
after it.  The store takes it as ``fs=`` (STYLE principle 8).

What is modelled
----------------
* **File data.**  An inode's durable bytes are its content at its last
  ``File.sync()`` (fdatasync) or ``File.sync_all()`` (fsync).  On a crash
  every file becomes its durable bytes plus, when the crash keeps unsynced
  data, a random-length prefix (seeded) of what changed after the sync:
  from the first byte that differs from the durable bytes to the end of the
  current bytes.  Writes reach the disk in order, but any amount of them may
  be missing.  For appends that is a prefix of the appended bytes; for an
  overwrite inside the file (the WAL's groups over its preallocated zeros,
  ``File.zero_fill``) it is the durable bytes with a prefix of the
  overwrite in place: the write may be lost, or torn anywhere, zeros after
  the tear.  A file truncated since its last sync comes back either at its
  durable bytes or at its current bytes.
* **Directory entries.**  A name created by ``open`` (O_CREAT), ``rename``
  or ``mkdir`` is durable only once its directory was fsynced
  (``fsync_dir``) after the change.  On a crash each directory holds
  exactly the entries it held at its last ``fsync_dir``: a rename not
  followed by one is undone (the old name still points at the old inode,
  with that inode's durable bytes), a file created without one vanishes,
  and so does everything under a directory whose own entry was never made
  durable.  Entries are tracked by inode number (``st_ino``); every inode we
  remember is pinned by an open descriptor, so the kernel cannot reuse the
  number while we remember its bytes.
* Whatever existed when a CrashFS was created counts as durable (a crash
  starts from a machine that has written everything back).
* ``crash_after=N`` makes the N-th mutating operation (write, sync,
  truncate, create, rename, fsync_dir) the point of the power cut: it and
  every later operation raise ``OSError(EIO)``, as a dead disk would; the
  test then calls :meth:`crash`.  ``fail_sync`` makes ``sync`` raise EIO
  (an fsync error) without a crash.

What is not modelled
--------------------
* Data reaching the disk out of order within the unsynced part of a file
  (holes, zero-filled blocks: XFS, or ext4 with data=writeback or delayed
  allocation, can leave a file size covering blocks never written; a later
  page of a group written over preallocated zeros landing while an earlier
  one did not, which the scanner refuses as damage, docs/design.md), and
  sector tearing or bit rot inside synced data.
* Files written outside the file layer (``LOCK``, the query audit log):
  they have no durable bytes of their own and come back with a prefix of
  their current bytes if their directory entry was durable.  Tests open
  stores with ``audit=False``.
* Metadata other than names and sizes (times, modes); hard links.
* The engine's reads (mmap, pread) see the page cache, like a real process.
"""
from __future__ import annotations

import errno
import os
import random
import shutil
import stat
import threading

import numpy as np

from stemedb.core.fileio import File, FileSystem


class _Node:
    __slots__ = ("durable", "pin", "dirty_trunc")

    def __init__(self, durable: bytes, pin: int):
        self.durable = durable      # bytes made durable by the last sync
        self.pin = pin              # O_RDONLY descriptor: reads the inode, keeps its number
        self.dirty_trunc = False    # truncated since the last sync


def _first_difference(a: bytes, b: bytes) -> int:
    """The first offset where ``a`` and ``b`` differ (the shorter's length if
    one is a prefix of the other)."""
    m = min(len(a), len(b))
    diff = np.flatnonzero(np.frombuffer(a, np.uint8, m) != np.frombuffer(b, np.uint8, m))
    return int(diff[0]) if len(diff) else m


def _read_fd(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


class CrashFile(File):
    def write(self, data) -> None:
        fs = self.fs
        with fs._mu:
            fs._op("write")
            super().write(data)

    def zero_fill(self, start: int, end: int) -> None:
        fs = self.fs
        with fs._mu:
            fs._op("write")
            super().zero_fill(start, end)

    def sync_all(self) -> None:
        self.sync()     # the model's durable bytes include the size already

    def sync(self) -> None:
        fs = self.fs
        with fs._mu:
            fs._op("sync")
            fs.syncs += 1
            if fs.fail_sync:
                raise OSError(errno.EIO, "injected fsync failure")
            node = fs._node_for_fd(self.fd)
            node.durable = _read_fd(node.pin)   # appends, overwrites and truncations
            node.dirty_trunc = False
            # no real fdatasync: durability is what this model says it is

    def truncate(self, size: int) -> None:
        fs = self.fs
        with fs._mu:
            fs._op("truncate")
            super().truncate(size)
            fs._node_for_fd(self.fd).dirty_trunc = True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class CrashFS(FileSystem):
    file_class = CrashFile

    def __init__(self, root: str, seed: int = 0, *, crash_after: int | None = None):
        self.root = os.path.abspath(root)
        os.makedirs(self.root, exist_ok=True)
        self.rng = random.Random(seed)
        self._mu = threading.RLock()
        self.crash_after = crash_after
        self.ops = 0
        self.syncs = 0
        self.fail_sync = False
        self.dead = False
        self.nodes: dict[int, _Node] = {}
        self.listings: dict[int, dict[str, tuple[str, int]]] = {}   # dir inode -> durable entries
        self.root_ino = os.stat(self.root).st_ino
        self._adopt_tree()

    # ------------------------------------------------------------ bookkeeping
    def _adopt_tree(self) -> None:
        """Everything on disk now is durable."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            self.listings[os.stat(dirpath).st_ino] = self._listing(dirpath)
            for name in filenames:
                p = os.path.join(dirpath, name)
                self._pin(p, durable=None)

    def _listing(self, path: str) -> dict[str, tuple[str, int]]:
        out = {}
        for name in os.listdir(path):
            st = os.lstat(os.path.join(path, name))
            out[name] = ("d" if stat.S_ISDIR(st.st_mode) else "f", st.st_ino)
        return out

    def _pin(self, path: str, durable: bytes | None) -> _Node:
        st = os.lstat(path)
        node = self.nodes.get(st.st_ino)
        if node is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            node = _Node(_read_fd(fd) if durable is None else durable, fd)
            self.nodes[st.st_ino] = node
        return node

    def _node_for_fd(self, fd: int) -> _Node:
        return self.nodes[os.fstat(fd).st_ino]

    def _op(self, what: str) -> None:
        if self.dead:
            raise OSError(errno.EIO, f"simulated power loss ({what} after the crash point)")
        self.ops += 1
        if self.crash_after is not None and self.ops >= self.crash_after:
            self.dead = True
            raise OSError(errno.EIO, f"simulated power loss at operation {self.ops} ({what})")

    # ------------------------------------------------------------ the file layer
    def open_append(self, path: str) -> File:
        with self._mu:
            existed = os.path.exists(path)
            if not existed:
                self._op("create")
            f = super().open_append(path)
            # a new inode has no durable bytes; so has a file made outside the layer
            self._pin(path, durable=b"")
            return f

    def rename(self, src: str, dst: str) -> None:
        with self._mu:
            self._op("rename")
            super().rename(src, dst)

    def fsync_dir(self, path: str) -> None:
        with self._mu:
            self._op("fsync_dir")
            listing = self._listing(path)
            self.listings[os.stat(path).st_ino] = listing
            for name, (kind, _ino) in listing.items():
                if kind == "f":
                    self._pin(os.path.join(path, name), durable=b"")

    def makedirs(self, path: str) -> None:
        with self._mu:
            if not os.path.isdir(path):
                self._op("mkdir")
            super().makedirs(path)   # os.makedirs, then fsync_dir(parent) as the engine does

    # ------------------------------------------------------------ the crash
    def crash(self, keep_unsynced: bool = True) -> dict:
        """Cut the power: rewrite ``root`` to what the disk holds afterwards.

        Returns ``{relative path: bytes}`` of the files left.  This CrashFS is
        dead afterwards; open the store again with a new one.
        """
        with self._mu:
            self.dead = True
            files: dict[str, bytes] = {}
            dirs: list[str] = []

            def walk(dir_ino: int, rel: str) -> None:
                for name, (kind, ino) in sorted(self.listings.get(dir_ino, {}).items()):
                    r = os.path.join(rel, name) if rel else name
                    if kind == "d":
                        dirs.append(r)
                        walk(ino, r)
                    else:
                        files[r] = self._after_crash(ino, keep_unsynced)
            walk(self.root_ino, "")
            for name in os.listdir(self.root):
                p = os.path.join(self.root, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                else:
                    os.unlink(p)
            for d in dirs:
                os.makedirs(os.path.join(self.root, d), exist_ok=True)
            for r, data in files.items():
                with open(os.path.join(self.root, r), "wb") as f:
                    f.write(data)
            for node in self.nodes.values():
                os.close(node.pin)
            self.nodes.clear()
            return files

    def _after_crash(self, ino: int, keep_unsynced: bool) -> bytes:
        node = self.nodes.get(ino)
        if node is None:
            return b""
        current = _read_fd(node.pin)
        durable = node.durable
        if not keep_unsynced:
            return durable
        if node.dirty_trunc or len(current) < len(durable):
            return self.rng.choice([durable, current])
        # in order from the first changed byte: appends and overwrites alike
        n = _first_difference(durable, current)
        k = n + self.rng.randint(0, len(current) - n)
        return current[:k] + durable[k:]

    def close(self) -> None:
        """Forget everything without a crash (the test is over)."""
        with self._mu:
            for node in self.nodes.values():
                os.close(node.pin)
            self.nodes.clear()
            self.dead = True
