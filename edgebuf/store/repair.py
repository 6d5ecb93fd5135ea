"""Repair of a damaged buffer, crash-safe at every step.

A damaged buffer is never deleted and never replaced by an empty one. The steps:

1. ``quick_check`` fails: the file and its WAL are *copied* (not moved) to
   ``<db>.damaged-<stamp>`` and ``-wal``, synced.
2. A marker ``<db>.repair`` naming that copy is written and synced: from here on, a
   restart resumes the repair instead of trusting ``<db>``.
3. Every readable row of the copy is salvaged into ``<db>.salvage``, complete and synced.
4. ``<db>``'s WAL and shared-memory index are removed and ``<db>.salvage`` is renamed over
   ``<db>`` (atomic), the folder synced.
5. The marker is removed.

A kill before 2 leaves ``<db>`` as it was (the next start repairs it again); a kill between
2 and 5 leaves the marker, and the next start (``repair_db``, which the client runs at
start-up when it finds the marker) redoes 3-5 from the kept copy. Sequence numbers continue
past the highest the copy shows (metadata marks, salvaged and dropped rows), so the cloud's
gap report never sees a sequence number twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

from edgebuf.clock import Clock
from edgebuf.errors import BufferCorruptError
from edgebuf.store.connection import acquire_process_lock, release_process_lock
from edgebuf.store.files import fsync_dir, fsync_path, replace_durably
from edgebuf.store.manager import LocalBufferManager
from edgebuf.store.salvage import salvage_into

log = logging.getLogger("edgebuf.store.repair")

__all__ = ["check_integrity", "interrupted_repair", "open_buffer", "repair_db"]


def check_integrity(db_path: str | os.PathLike[str]) -> tuple[bool, str]:
    """Run ``PRAGMA quick_check``; return (ok, message). A missing file counts as ok."""
    path = Path(db_path)
    if not path.exists():
        return True, "no buffer file yet"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
            conn.execute("SELECT count(*) FROM prediction_buffer").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return False, str(exc)
    message = "; ".join(r[0] for r in rows[:5])
    return message == "ok", message


def _marker(path: Path) -> Path:
    return path.with_name(f"{path.name}.repair")


def interrupted_repair(db_path: str | os.PathLike[str]) -> Path | None:
    """The damaged copy of a repair that was interrupted (its marker is on disk), or None."""
    marker = _marker(Path(db_path))
    try:
        aside = Path(json.loads(marker.read_text())["damaged_copy"])
    except (FileNotFoundError, NotADirectoryError):
        return None  # no marker (or no folder: the path's own check reports that)
    except (ValueError, KeyError, TypeError):
        # The marker itself was cut short before its sync: step 2 never completed, so
        # <db> was never touched; the repair starts over from the check.
        marker.unlink()
        return None
    return aside if aside.exists() else None


def _copy_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 0
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    shutil.copyfile(path, aside)
    fsync_path(aside)
    wal = Path(f"{path}-wal")
    if wal.exists():  # keep committed frames with their database
        shutil.copyfile(wal, f"{aside}-wal")
        fsync_path(f"{aside}-wal")
    fsync_dir(aside)
    return aside


def repair_db(db_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check integrity; if damaged (or a repair was interrupted), keep a copy aside, salvage
    every readable row into a fresh buffer, put it in place atomically and report counts.

    Takes the buffer's process lock: no client may run on the file meanwhile."""
    path = Path(db_path)
    fd = acquire_process_lock(path)
    try:
        aside = interrupted_repair(path)
        if aside is not None:
            message = f"resumed an interrupted repair from {aside}"
        else:
            ok, message = check_integrity(path)
            if ok:
                return {"repaired": False, "integrity": message}
            aside = _copy_aside(path)
            marker = _marker(path)
            tmp = marker.with_name(marker.name + ".tmp")
            tmp.write_text(json.dumps({"damaged_copy": str(aside)}))
            replace_durably(tmp, marker)
        target = path.with_name(f"{path.name}.salvage")
        report = salvage_into(aside, target)
        for stale in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        replace_durably(target, path)
        _marker(path).unlink()
        fsync_dir(path)
    finally:
        release_process_lock(fd)
    report["integrity"] = message
    log.warning("repaired %s: %s", path, report)
    return report


def open_buffer(
    db_path: str | os.PathLike[str],
    *,
    durability: str = "normal",
    clock: Clock | None = None,
    verify: bool = True,
    auto_repair: bool = True,
) -> tuple[LocalBufferManager, dict[str, Any] | None]:
    """Open the buffer for a client: (store, repair report or None).

    With ``verify`` the file is ``quick_check``-ed first; a damaged file is set aside and
    salvaged (``auto_repair``) so a corrupt buffer never stops the camera from logging (no
    crash loop at start-up), and a repair a crash interrupted is completed before anything
    else. Without ``auto_repair`` either case raises ``BufferCorruptError``."""
    if interrupted_repair(db_path) is None:
        try:
            store = LocalBufferManager(db_path, durability=durability, clock=clock)
            if verify:
                try:
                    store.verify()
                except BufferCorruptError:
                    store.close()
                    raise
            return store, None
        except BufferCorruptError:
            if not auto_repair:
                raise
    elif not auto_repair:
        raise BufferCorruptError(
            f"a repair of {db_path} was interrupted; run `edgebuf repair` to complete it"
        )
    report = repair_db(db_path)
    log.error("buffer %s was damaged and has been repaired: %s", db_path, report)
    return LocalBufferManager(db_path, durability=durability, clock=clock), report
