"""Making file operations durable: fsync of a file and of the folder that names it."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a file (or folder) by path, so its data (or its entries) survive power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync the folder holding ``path``: a create, rename or unlink in it is then durable."""
    fsync_path(Path(path).parent)


def replace_durably(src: Path, dst: Path) -> None:
    """Atomically put ``src`` at ``dst`` (``os.replace``) and make the rename durable."""
    fsync_path(src)
    os.replace(src, dst)
    fsync_dir(dst)
