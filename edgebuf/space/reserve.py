"""Disk-space reserve: a ballast file that is given up the moment the disk fills.

On a full disk even a DELETE needs room (SQLite appends the change to the WAL before
it can free anything), so a buffer that filled its volume could not clean up after
itself. The client keeps ``reserve_bytes`` of ballast beside the buffer; on the first
"disk full" it deletes the ballast, checkpoints and truncates the WAL, deletes delivered
rows and retries the write once. The ballast is re-created when free space allows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("edgebuf.space.reserve")


class DiskReserve:
    """A file of ``size`` bytes next to the buffer, held while the disk has room for it."""

    def __init__(self, db_path: str | os.PathLike[str], size: int) -> None:
        self.path = Path(f"{db_path}.reserve")
        self.size = size

    @property
    def held(self) -> bool:
        return self.size > 0 and self.path.exists() and self.path.stat().st_size >= self.size

    def ensure(self) -> bool:
        """(Re)create the ballast if it is missing and 1.25 times its size is free."""
        if self.size <= 0 or self.held:
            return self.held
        if shutil.disk_usage(self.path.parent).free < self.size + self.size // 4:
            return False
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not create the disk reserve %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False
        return True

    def release(self) -> bool:
        """Delete the ballast; True if there was one to give up."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("disk full: released %d bytes of reserve beside the buffer", self.size)
        return True
