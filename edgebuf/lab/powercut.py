"""A power-loss filesystem for tests: every write stays in memory until it is fsynced, and a
"power cut" drops whatever was not, while the processes using it are SIGKILLed at that instant.

    with PowerCutFS() as fs:                       # a FUSE mount on a fresh temporary folder
        proc = subprocess.Popen([...uses fs.path / "buffer.db"...])
        ...
        fs.cut(proc)                               # freeze writes, SIGKILL, drop unsynced
        sqlite3.connect(fs.path / "buffer.db")     # the durable state: count what survived

The model (what a cut keeps), stated once and tested in ``tests/lab/test_powercut.py``:

- **File data and size**: the content as of the last ``fsync``/``fdatasync`` of *any* handle
  of that file (as on Linux, where both flush the inode). Nothing else: a written but unsynced
  page is gone, also when other files were synced after it (no write ordering is promised
  between files; a real disk may keep some unsynced writes, this one keeps none, the worst
  case for the writer). ``truncate`` is a change of data: durable at the file's next fsync.
- **Names** (create, mkdir, unlink, rmdir, rename), ``metadata="inode"`` (the default, what
  ext4 and XFS do through their journal): a change in directory D is durable once D is
  fsynced (``open(D)`` + ``fsync``); an fsync of a file also makes the names that link it
  now durable and its old names gone (a file created or renamed, then fsynced, is found under
  its new name). An unlink is durable only through an fsync of its directory.
  ``metadata="dir"`` is strict POSIX: only an fsync of the directory makes its names durable.
- SQLite on Linux fsyncs the directory after creating a rollback journal or a WAL (its first
  sync of such a file), not after creating the main database file: under ``metadata="dir"``
  a database file created and never followed by a directory fsync does not survive a cut.
- Locks (``fcntl``/``flock``) are the kernel's (this filesystem implements none), so SQLite's
  and edgebuf's locking behave as on a local disk. The WAL index (``-shm``) is mmapped
  through the kernel as usual; its content after a cut is whatever was synced (SQLite
  rebuilds it from the WAL on the first open).

A cut: new writes block (the writer is "stopped" mid-call, never told success), the given
processes get SIGKILL, the blocked calls fail with EIO (a process inside a FUSE call dies only
when the call returns; its pending SIGKILL ends it before it sees the error), the processes
are reaped, the filesystem is
unmounted (so no kernel cache outlives it), reverted to its durable state and mounted again at
the same path. The FUSE server is a child process (``python -m edgebuf.lab.powercut serve``)
driven over its stdin/stdout; it unmounts when the harness closes it or its stdin ends, and
the mount carries ``auto_unmount``, so even a SIGKILLed harness leaves no stale mount.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgebuf.lab.powermodel import Metadata, fusermount


def unusable_reason() -> str | None:
    """Why FUSE cannot be used here (None when it can): binding, libfuse, /dev/fuse."""
    try:
        import mfusepy  # noqa: F401
    except ImportError as exc:  # mfusepy raises EnvironmentError without libfuse
        return f"the FUSE binding mfusepy is not usable ({exc}); pip install 'edgebuf[lab]'"
    except OSError as exc:
        return f"libfuse is missing ({exc}); apt-get install fuse3"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this kernel or container)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not accessible to this user"
    if fusermount() is None:
        return "fusermount3 is missing; apt-get install fuse3"
    return None


# ---------------------------------------------------------------------- the harness
class PowerCutError(RuntimeError):
    """The power-cut filesystem could not be mounted, cut or unmounted."""


class PowerCutFS:
    """A mounted power-cut filesystem (context manager); ``path`` is the mount point."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 metadata: Metadata = "inode", timeout: float = 30.0) -> None:  # fmt: skip
        self._own_dir = path is None
        self.path = Path(path) if path is not None else Path(tempfile.mkdtemp(prefix="powercut-"))
        self.metadata = metadata
        self.timeout = timeout
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> PowerCutFS:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        reason = unusable_reason()
        if reason:
            raise PowerCutError(reason)
        self.path.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "edgebuf.lab.powercut", "serve", str(self.path),
             "--metadata", self.metadata],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )  # fmt: skip
        try:
            self._read()
        except BaseException:
            self.close()
            raise

    def _read(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self._proc.stdout.readline()))
        reader.start()
        reader.join(self.timeout)
        if not result or not result[0]:
            raise PowerCutError(
                f"the power-cut server did not answer (exit status {self._proc.poll()})"
            )
        return json.loads(result[0])

    def _call(self, cmd: str) -> dict[str, Any]:
        if self._proc is None or self._proc.poll() is not None:
            raise PowerCutError("the power-cut server is not running")
        assert self._proc.stdin is not None
        self._proc.stdin.write(cmd + "\n")
        self._proc.stdin.flush()
        reply = self._read()
        if not reply.get("ok"):
            raise PowerCutError(f"{cmd}: {reply.get('error')}")
        return reply

    def freeze(self) -> None:
        """Stop every write where it is: calls block until the cut (which fails them)."""
        self._call("freeze")

    def cut(self, *victims: subprocess.Popen[Any] | int) -> dict[str, int]:
        """The power cut: freeze, SIGKILL ``victims`` (Popen or pid) and reap them, drop
        everything not synced, remount. Every file of the mount must be closed by then
        (in this process too). Returns the filesystem's counters."""
        self.freeze()
        for v in victims:
            pid = v.pid if isinstance(v, subprocess.Popen) else v
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # A process inside a FUSE call cannot die before the call returns: fail the blocked
        # calls now (the pending SIGKILL ends the process before it sees the EIO).
        self._call("drop")
        for v in victims:
            if isinstance(v, subprocess.Popen):
                v.wait(self.timeout)
            else:
                _wait_gone(v, self.timeout)
        return self._call("cut")["stats"]

    def stats(self) -> dict[str, int]:
        """Counters: writes, bytes_written, fsyncs, fsyncdirs, bytes_synced, cuts."""
        return self._call("stats")["stats"]

    def close(self) -> None:
        """Unmount and stop the server; never leaves a mount behind. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.close()
            try:
                proc.wait(self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if os.path.ismount(self.path):
            subprocess.run([fusermount() or "fusermount3", "-uz", str(self.path)],
                           capture_output=True)  # fmt: skip
        if self._own_dir:
            with contextlib.suppress(OSError):
                self.path.rmdir()


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child: poll for its disappearance
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.01)
    raise PowerCutError(f"process {pid} did not die after SIGKILL")


@contextlib.contextmanager
def powercut_fs(metadata: Metadata = "inode") -> Iterator[PowerCutFS]:
    """``with powercut_fs() as fs:`` - a mounted PowerCutFS on a temporary folder."""
    fs = PowerCutFS(metadata=metadata)
    fs.start()
    try:
        yield fs
    finally:
        fs.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the power-cut FUSE server (driven by PowerCutFS)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("mountpoint")
    s.add_argument("--metadata", choices=["inode", "dir"], default="inode")
    args = p.parse_args(argv)
    from edgebuf.lab.powerfs import serve  # the FUSE binding loads in the server only

    return serve(args.mountpoint, args.metadata)


if __name__ == "__main__":
    sys.exit(main())
