"""A power cut during ``edgebuf repair`` (the power-loss row of ``edgebuf.lab.powerloss``'s
pattern): a damaged buffer on the power-cut mount, the real command repairing it in a
subprocess, the cut at a random moment of the run, then the reboot's reopen through
``open_buffer`` (what the client does at start-up), which must resume or redo the repair.

What a cut may cost is measured against a *reference*: the same damaged bytes, copied off
the mount before the run and repaired uncut (``repair_db``). Salvage is deterministic given
the bytes, so after any cut the reopened buffer must hold every unsent row the reference
salvaged (``lost`` counts the ones it does not), nothing that was not in the original, and
sequence marks at least as high as the reference's (the cloud never sees a sequence number
twice). A failed integrity check, a row from nowhere, a sequence mark gone backwards or a
marker left after the reopen raises ``AssertionError``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgebuf.lab.powercut import PowerCutFS
from edgebuf.lab.powerloss import Trial

if TYPE_CHECKING:
    from edgebuf.store import LocalBufferManager

# Where the cut left the repair, read off the durable state before the reopen (Trial.extra).
BEFORE_MARKER, RESUMED, COMPLETE = 0, 1, 2
PHASES = {BEFORE_MARKER: "before the marker", RESUMED: "resumed from the marker",
          COMPLETE: "after the rename"}  # fmt: skip

# The ``edgebuf`` console script is ``edgebuf.ops.cli:main``; this runs it after the imports
# (the command imports the repair lazily), so "start" is where the repair's work begins.
_REPAIR = """
import sys
import edgebuf.store.repair
from edgebuf.ops.cli import main
print("start", flush=True)
main(["repair"])
"""
_UNSENT = ("pending", "sending", "failed")
# The rows above the checkpoint stay in the WAL: the process ends without closing the store.
_SEED = """
import json, os, random, sys, time
from edgebuf.lab.powerloss import _seed_buffer
from edgebuf.lab.producer import fake_prediction
from edgebuf.records import prepare_record
from edgebuf.store import LocalBufferManager
from pathlib import Path
db, rows, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
_seed_buffer(db, rows, seed)
store = LocalBufferManager(db, durability="full")
rng = random.Random(~seed)
store.add_predictions("cam-cleanup", [prepare_record(fake_prediction(rng, rows + i),
                      now=time.time(), max_bytes=1 << 20) for i in range(rows // 8)])
unsent = [r for s in ("pending", "sending", "failed") for r in store.record_ids(s)]
print(json.dumps({"unsent": unsent, "every": unsent + store.record_ids("sent"),
                  "sequences": store.sequences()}), flush=True)
os._exit(0)
"""


@dataclass
class _State:
    """What a buffer holds: unsent and all record ids, each device's sequence mark."""

    unsent: set[str]
    every: set[str]
    sequences: dict[str, int]


def _state_of(db: Path) -> _State:
    from edgebuf.store import LocalBufferManager

    with LocalBufferManager(db, exclusive=False) as store:
        return _state(store)


def _state(store: LocalBufferManager) -> _State:
    unsent = {r for status in _UNSENT for r in store.record_ids(status)}
    return _State(unsent, unsent | set(store.record_ids("sent")), store.sequences())


def _wal_pages(db: Path) -> set[int]:
    """Page numbers the WAL holds a frame for (those pages of the file are shadowed)."""
    with open(f"{db}-wal", "rb") as f:
        wal = f.read()
    size = int.from_bytes(wal[8:12], "big")
    return {int.from_bytes(wal[at : at + 4], "big") for at in range(32, len(wal), 24 + size)}


def damage_buffer(db: Path, seed: int, pages: int = 4) -> None:
    """Damage ``db`` the same way for the same ``seed``: ``pages`` pages from the middle half
    of the file, none the WAL shadows, overwritten with noise (``quick_check`` fails; the
    rows on them are gone). Synced, file and folder: the durable state a cut goes back to."""
    from edgebuf.store.files import fsync_dir

    rng = random.Random(seed)
    shadowed = _wal_pages(db)
    with open(db, "r+b") as f:
        size = int.from_bytes(f.read(18)[16:18], "big")
        page = 65536 if size == 1 else size
        count = os.fstat(f.fileno()).st_size // page
        middle = [n for n in range(count // 4, 3 * count // 4) if n + 1 not in shadowed]
        for n in sorted(rng.sample(middle, pages)):
            f.seek(n * page)
            f.write(rng.randbytes(page))
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(db)


def _reference(db: Path) -> _State:
    """What an uncut repair salvages from ``db``'s bytes (repaired on a copy off the mount)."""
    from edgebuf.store.repair import repair_db

    with tempfile.TemporaryDirectory(prefix="edgebuf-repair-ref-") as tmp:
        copy = Path(tmp) / db.name
        shutil.copyfile(db, copy)
        if Path(f"{db}-wal").exists():
            shutil.copyfile(f"{db}-wal", f"{copy}-wal")
        report = repair_db(copy)
        if not report.get("repaired"):
            raise RuntimeError(f"the damage did not fail quick_check: {report}")
        return _state_of(copy)


def _start(db: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, BUFFER_DB_PATH=str(db))
    proc = subprocess.Popen([sys.executable, "-c", _REPAIR], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)  # fmt: skip
    assert proc.stdout is not None
    if proc.stdout.readline() != "start\n":
        proc.kill()
        proc.wait()
        raise RuntimeError(f"edgebuf repair did not start (exit {proc.returncode})")
    return proc


def _damaged_buffer(fs: PowerCutFS, name: str, rows: int, seed: int) -> tuple[Path, _State]:
    """A buffer in use, damaged: ``rows`` checkpointed into the file (``_seed_buffer``, half
    sent), ``rows // 8`` more committed in the WAL (``full``: synced), then ``damage_buffer``."""
    db = fs.path / f"{name}.db"
    out = subprocess.run([sys.executable, "-c", _SEED, str(db), str(rows), str(seed)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"seeding {db} failed: {out.stderr[-2000:]}")
    state = json.loads(out.stdout)
    damage_buffer(db, seed)
    return db, _State(set(state["unsent"]), set(state["every"]), state["sequences"])


def _remove(fs: PowerCutFS, db: Path) -> None:
    for p in fs.path.glob(f"{db.name}*"):  # the filesystem lives in memory
        p.unlink()


def repair_duration(fs: PowerCutFS, rows: int = 4000) -> float:
    """Seconds one uncut ``edgebuf repair`` of a damaged buffer takes here (to aim the cuts)."""
    db, _ = _damaged_buffer(fs, "repair-calibrate", rows, 0)
    proc = _start(db)
    started = time.monotonic()
    out, _ = proc.communicate(timeout=120)
    took = time.monotonic() - started
    _remove(fs, db)
    if proc.returncode != 0 or '"repaired": true' not in out:
        raise RuntimeError(f"edgebuf repair failed (exit {proc.returncode}): {out}")
    return took


def repair_trial(fs: PowerCutFS, *, rows: int = 4000, seed: int = 0, within: float = 1.0,
                 rng: random.Random | None = None) -> Trial:  # fmt: skip
    """Cut ``edgebuf repair`` of a damaged buffer at a random moment of its first ``within``
    seconds (see ``repair_duration``), reopen with ``open_buffer`` and compare with the
    uncut reference. ``acked``: unsent rows the reference salvaged; ``lost``: of those, the
    ones missing after the reopen; ``extra``: where the cut left the repair (``PHASES``)."""
    from edgebuf.store.repair import check_integrity, open_buffer

    rng = rng or random.Random(seed)
    db, original = _damaged_buffer(fs, f"repair-{seed}", rows, seed)
    try:
        ref = _reference(db)
        if not ref.every <= original.every:
            raise AssertionError(f"the uncut repair made up {len(ref.every - original.every)} rows")
        proc = _start(db)
        time.sleep(rng.uniform(0.0, within))
        if proc.poll() not in (None, 0):
            raise RuntimeError(f"edgebuf repair failed (exit {proc.returncode})")
        fs.cut(proc)
        marker = Path(f"{db}.repair")
        if marker.exists():
            phase = RESUMED
        else:
            phase = COMPLETE if check_integrity(db)[0] else BEFORE_MARKER
        store, _ = open_buffer(db)  # the reboot: what the client runs at start-up
        with store:
            after = _state(store)
        ok, message = check_integrity(db)
        if not ok:
            raise AssertionError(f"{db} failed integrity_check after the reopen: {message}")
        if marker.exists():
            raise AssertionError(f"the reopen left the repair marker {marker}")
        if made_up := after.every - original.every:
            raise AssertionError(f"{len(made_up)} rows after the reopen were never buffered")
        behind = {d: (after.sequences.get(d, 0), s) for d, s in ref.sequences.items()
                  if after.sequences.get(d, 0) < s}  # fmt: skip
        if behind:
            raise AssertionError(
                f"sequence marks went back (after, uncut): {behind}; cut {PHASES[phase]},"
                f" {len(ref.unsent - after.unsent)} of {len(ref.unsent)} unsent rows missing"
            )
    finally:
        _remove(fs, db)
    return Trial(len(ref.unsent), len(ref.unsent - after.unsent), extra=phase)
