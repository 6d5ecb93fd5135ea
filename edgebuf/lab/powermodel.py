"""The power-cut filesystem's in-memory model: inodes with a volatile and a durable state,
and what a cut keeps (the rules are stated in ``edgebuf.lab.powercut``)."""

from __future__ import annotations

import errno
import shutil
import stat
import time
from dataclasses import dataclass, field
from typing import Literal

BLOCK = 4096


def fusermount() -> str | None:
    """The ``fusermount3`` (or ``fusermount``) binary, or None."""
    return shutil.which("fusermount3") or shutil.which("fusermount")


Metadata = Literal["inode", "dir"]


# ---------------------------------------------------------------------- the in-memory model
@dataclass(eq=False)
class Inode:
    """A file or directory: its current state and its durable state."""

    ino: int
    mode: int
    blocks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0
    dirty: set[int] = field(default_factory=set)
    durable_blocks: dict[int, bytes] = field(default_factory=dict)
    durable_size: int = 0
    entries: dict[str, int] = field(default_factory=dict)  # directories: name -> ino
    durable_entries: dict[str, int] = field(default_factory=dict)
    mtime_ns: int = field(default_factory=time.time_ns)
    open_handles: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def read(self, size: int, offset: int) -> bytes:
        end = min(self.size, offset + size)
        out = bytearray()
        pos = offset
        while pos < end:
            b, start = divmod(pos, BLOCK)
            take = min(BLOCK - start, end - pos)
            block = self.blocks.get(b)
            out += block[start : start + take] if block is not None else bytes(take)
            pos += take
        return bytes(out)

    def write(self, data: bytes, offset: int) -> None:
        pos, i = offset, 0
        while i < len(data):
            b, start = divmod(pos, BLOCK)
            take = min(BLOCK - start, len(data) - i)
            old = self.blocks.get(b, b"")
            block = old.ljust(start, b"\0")[:start] + data[i : i + take] + old[start + take :]
            self.blocks[b] = block
            self.dirty.add(b)
            pos += take
            i += take
        self.size = max(self.size, offset + len(data))
        self.mtime_ns = time.time_ns()

    def truncate(self, length: int) -> None:
        last = (length + BLOCK - 1) // BLOCK  # blocks at or past this index go
        for b in [b for b in self.blocks if b >= last]:
            del self.blocks[b]
            self.dirty.add(b)
        if length % BLOCK and (length // BLOCK) in self.blocks:
            b = length // BLOCK
            self.blocks[b] = self.blocks[b][: length % BLOCK]
            self.dirty.add(b)
        for b in range(length // BLOCK, (self.size + BLOCK - 1) // BLOCK):
            self.dirty.add(b)
        self.size = length
        self.mtime_ns = time.time_ns()

    def sync_data(self) -> int:
        """Make the current content durable; return the bytes that became durable."""
        n = 0
        for b in self.dirty:
            block = self.blocks.get(b)
            if block is None:
                self.durable_blocks.pop(b, None)
            else:
                self.durable_blocks[b] = block
                n += len(block)
        self.dirty.clear()
        self.durable_size = self.size
        return n

    def revert(self) -> None:
        self.blocks = dict(self.durable_blocks)
        self.size = self.durable_size
        self.dirty.clear()
        self.entries = dict(self.durable_entries)
        self.open_handles = 0


class PowerCutState:
    """The filesystem without FUSE: a tree of inodes with a durable shadow (unit-testable)."""

    def __init__(self, metadata: Metadata = "inode") -> None:
        if metadata not in ("inode", "dir"):
            raise ValueError(f"metadata must be 'inode' or 'dir', got {metadata!r}")
        self.metadata = metadata
        self.inodes: dict[int, Inode] = {1: Inode(1, stat.S_IFDIR | 0o755)}
        self.next_ino = 2
        self.stats = {"writes": 0, "bytes_written": 0, "fsyncs": 0, "fsyncdirs": 0,
                      "bytes_synced": 0, "cuts": 0}  # fmt: skip

    # -- names
    def lookup(self, path: str) -> Inode:
        node = self.inodes[1]
        for part in [p for p in path.split("/") if p]:
            if not node.is_dir or part not in node.entries:
                raise OSError(errno.ENOENT, path)
            node = self.inodes[node.entries[part]]
        return node

    def parent(self, path: str) -> tuple[Inode, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self.lookup(head or "/")
        if not parent.is_dir:
            raise OSError(errno.ENOTDIR, head)
        return parent, name

    def make(self, path: str, mode: int) -> Inode:
        parent, name = self.parent(path)
        if name in parent.entries:
            raise OSError(errno.EEXIST, path)
        node = Inode(self.next_ino, mode)
        self.next_ino += 1
        self.inodes[node.ino] = node
        parent.entries[name] = node.ino
        return node

    def unlink(self, path: str, *, directory: bool = False) -> None:
        parent, name = self.parent(path)
        if name not in parent.entries:
            raise OSError(errno.ENOENT, path)
        node = self.inodes[parent.entries[name]]
        if directory and not node.is_dir:
            raise OSError(errno.ENOTDIR, path)
        if not directory and node.is_dir:
            raise OSError(errno.EISDIR, path)
        if directory and node.entries:
            raise OSError(errno.ENOTEMPTY, path)
        del parent.entries[name]
        self.collect()

    def rename(self, old: str, new: str) -> None:
        op, oname = self.parent(old)
        np, nname = self.parent(new)
        if oname not in op.entries:
            raise OSError(errno.ENOENT, old)
        node = op.entries[oname]
        target = np.entries.get(nname)
        if target is not None and target != node:
            t = self.inodes[target]
            if t.is_dir and t.entries:
                raise OSError(errno.ENOTEMPTY, new)
        del op.entries[oname]
        np.entries[nname] = node
        self.collect()

    # -- durability
    def fsync(self, node: Inode) -> None:
        self.stats["fsyncs"] += 1
        self.stats["bytes_synced"] += node.sync_data()
        if self.metadata == "inode":
            for d in self.inodes.values():
                if not d.is_dir:
                    continue
                for name, ino in list(d.durable_entries.items()):
                    if ino == node.ino and d.entries.get(name) != ino:
                        del d.durable_entries[name]
                for name, ino in d.entries.items():
                    if ino == node.ino:
                        d.durable_entries[name] = ino

    def fsyncdir(self, node: Inode) -> None:
        self.stats["fsyncdirs"] += 1
        node.durable_entries = dict(node.entries)
        node.durable_size = node.size
        if self.metadata == "inode":
            self.fsync_links_of(node)

    def fsync_links_of(self, node: Inode) -> None:
        for d in self.inodes.values():
            if d.is_dir and d is not node:
                for name, ino in d.entries.items():
                    if ino == node.ino:
                        d.durable_entries[name] = ino

    def reachable(self, durable: bool) -> set[int]:
        seen, todo = {1}, [1]
        while todo:
            node = self.inodes[todo.pop()]
            for ino in (node.durable_entries if durable else node.entries).values():
                if ino not in seen and ino in self.inodes:
                    seen.add(ino)
                    todo.append(ino)
        return seen

    def collect(self) -> None:
        """Forget inodes that no name reaches, now or after a cut, and nobody has open."""
        keep = self.reachable(False) | self.reachable(True)
        for ino in [i for i, n in self.inodes.items() if i not in keep and not n.open_handles]:
            del self.inodes[ino]

    def cut(self) -> None:
        """The power cut: everything returns to its durable state."""
        self.stats["cuts"] += 1
        keep = self.reachable(True)
        self.inodes = {i: n for i, n in self.inodes.items() if i in keep}
        for node in self.inodes.values():
            node.revert()
