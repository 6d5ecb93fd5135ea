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
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

BLOCK = 4096
Metadata = Literal["inode", "dir"]


def fusermount() -> str | None:
    """The ``fusermount3`` (or ``fusermount``) binary, or None."""
    return shutil.which("fusermount3") or shutil.which("fusermount")


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


# ---------------------------------------------------------------------- the FUSE side
def _operations(state: PowerCutState, ready: threading.Event) -> Any:
    import mfusepy

    class Ops(mfusepy.Operations):
        use_ns = True

        def __init__(self) -> None:
            self._mu = threading.Lock()
            self.handles: dict[int, Inode] = {}
            self.next_fh = 1
            self.frozen = threading.Event()  # set: mutations wait
            self.thawed = threading.Condition(self._mu)
            self.dropping = False  # after a freeze: mutations fail with EIO

        # -- the gate every mutation passes
        def _gate(self) -> None:
            while self.frozen.is_set():
                self.thawed.wait(0.05)
            if self.dropping:
                raise mfusepy.FuseOSError(errno.EIO)

        def _node(self, path: str | None, fh: int | None = None) -> Inode:
            if fh and fh in self.handles:
                return self.handles[fh]
            if path is None:
                raise mfusepy.FuseOSError(errno.EBADF)
            try:
                return state.lookup(path)
            except OSError as exc:
                raise mfusepy.FuseOSError(exc.errno or errno.ENOENT) from None

        def _call(self, fn, *args):  # noqa: ANN001, ANN202 - state method -> FuseOSError
            try:
                return fn(*args)
            except OSError as exc:
                raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None

        def _open(self, node: Inode) -> int:
            fh = self.next_fh
            self.next_fh += 1
            self.handles[fh] = node
            node.open_handles += 1
            return fh

        def init(self, path: str) -> None:
            ready.set()

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            with self._mu:
                node = self._node(path, fh)
                nlink = 2 if node.is_dir else 1
                return {
                    "st_mode": node.mode, "st_nlink": nlink, "st_size": node.size,
                    "st_uid": os.getuid(), "st_gid": os.getgid(), "st_ino": node.ino,
                    "st_mtime": node.mtime_ns, "st_ctime": node.mtime_ns,
                    "st_atime": node.mtime_ns, "st_blocks": (node.size + 511) // 512,
                }  # fmt: skip

        def readdir(self, path: str, fh: int) -> list[str]:
            with self._mu:
                return [".", "..", *self._node(path).entries]

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": BLOCK, "f_frsize": BLOCK, "f_blocks": 1 << 24,
                    "f_bfree": 1 << 23, "f_bavail": 1 << 23, "f_files": 1 << 20,
                    "f_ffree": 1 << 19, "f_namemax": 255}  # fmt: skip

        def access(self, path: str, amode: int) -> int:
            with self._mu:
                self._node(path)
            return 0

        def chmod(self, path: str, mode: int, fh: int | None = None) -> int:
            with self._mu:
                self._gate()
                node = self._node(path, fh)
                node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(mode)
            return 0

        def chown(self, path: str, uid: int, gid: int, fh: int | None = None) -> int:
            return 0

        def utimens(self, path: str, times: Any = None, fh: int | None = None) -> int:
            return 0

        def open(self, path: str, flags: int) -> int:
            with self._mu:
                node = self._node(path)
                if flags & os.O_TRUNC:
                    self._gate()
                    node.truncate(0)
                return self._open(node)

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            with self._mu:
                self._gate()
                try:
                    node = state.lookup(path)
                except OSError:
                    node = self._call(state.make, path, stat.S_IFREG | stat.S_IMODE(mode))
                return self._open(node)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            with self._mu:
                return self._node(path, fh).read(size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            with self._mu:
                self._gate()
                node = self._node(path, fh)
                node.write(bytes(data), offset)
                state.stats["writes"] += 1
                state.stats["bytes_written"] += len(data)
                return len(data)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            with self._mu:
                self._gate()
                self._node(path, fh).truncate(length)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            with self._mu:
                node = self.handles.pop(fh, None)
                if node is not None:
                    node.open_handles = max(0, node.open_handles - 1)
                    state.collect()
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            with self._mu:
                self._gate()
                state.fsync(self._node(path, fh))
            return 0

        def opendir(self, path: str) -> int:
            with self._mu:
                return self._open(self._node(path))

        def releasedir(self, path: str, fh: int) -> int:
            return self.release(path, fh)

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            with self._mu:
                self._gate()
                state.fsyncdir(self._node(path, fh))
            return 0

        def mkdir(self, path: str, mode: int) -> int:
            with self._mu:
                self._gate()
                self._call(state.make, path, stat.S_IFDIR | stat.S_IMODE(mode))
            return 0

        def unlink(self, path: str) -> int:
            with self._mu:
                self._gate()
                self._call(state.unlink, path)
            return 0

        def rmdir(self, path: str) -> int:
            with self._mu:
                self._gate()
                self._call(lambda p: state.unlink(p, directory=True), path)
            return 0

        def rename(self, old: str, new: str, flags: int = 0) -> int:
            with self._mu:
                self._gate()
                self._call(state.rename, old, new)
            return 0

        # -- control (from the harness, through the server's stdin)
        def freeze(self) -> None:
            with self._mu:
                self.frozen.set()

        def drop_blocked(self) -> None:
            with self._mu:
                self.dropping = True
                self.frozen.clear()
                self.thawed.notify_all()

        def restore(self) -> None:
            with self._mu:
                state.cut()
                self.handles.clear()
                self.dropping = False

    return Ops()


def serve(mountpoint: str, metadata: Metadata = "inode") -> int:
    """Run the FUSE server on ``mountpoint``; commands arrive as lines on stdin, answers
    (one JSON object per line) go to stdout. Commands: ``freeze``, ``drop`` (fail the
    blocked calls), ``cut``, ``stats``, ``quit``. ``cut`` expects the writers killed after ``freeze``; it unmounts, reverts to
    the durable state and mounts again before it answers."""
    import mfusepy

    state = PowerCutState(metadata)
    ready = threading.Event()
    ops = _operations(state, ready)
    out = sys.stdout
    out_lock = threading.Lock()
    remount = threading.Event()
    unmounted = threading.Event()
    quitting = threading.Event()

    def answer(obj: dict[str, Any]) -> None:
        with out_lock:
            out.write(json.dumps(obj) + "\n")
            out.flush()

    def unmount() -> str | None:
        for _attempt in range(50):
            done = subprocess.run(
                [fusermount() or "fusermount3", "-u", mountpoint], capture_output=True, text=True
            )
            if done.returncode == 0:
                return None
            time.sleep(0.1)
        return done.stderr.strip() or f"fusermount -u failed ({done.returncode})"

    def control() -> None:
        ready.wait()
        answer({"ready": True, "pid": os.getpid()})
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "freeze":
                ops.freeze()
                answer({"ok": True})
            elif cmd == "drop":
                ops.drop_blocked()
                answer({"ok": True})
            elif cmd == "cut":
                ops.drop_blocked()
                ready.clear()
                unmounted.clear()
                remount.set()
                error = unmount()
                if error:
                    answer({"ok": False, "error": error})
                    continue
                unmounted.wait(30)
                if not ready.wait(30):
                    answer({"ok": False, "error": "the filesystem did not come back"})
                    continue
                answer({"ok": True, "stats": state.stats})
            elif cmd == "stats":
                with ops._mu:
                    answer({"ok": True, "stats": dict(state.stats)})
            elif cmd == "quit":
                break
            else:
                answer({"ok": False, "error": f"unknown command {cmd!r}"})
        # quit or stdin closed (the harness is gone): unmount and end.
        quitting.set()
        ops.drop_blocked()
        unmount()
        answer({"ok": True, "bye": True})

    threading.Thread(target=control, name="powercut-control", daemon=True).start()
    opts = {"foreground": True, "auto_unmount": True, "fsname": "powercut",
            "attr_timeout": 0, "entry_timeout": 0, "negative_timeout": 0,
            "max_threads": 16}  # fmt: skip
    while True:
        mfusepy.FUSE(ops, mountpoint, **opts)
        if quitting.is_set() or not remount.is_set():
            return 0
        remount.clear()
        ops.restore()
        unmounted.set()


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
    return serve(args.mountpoint, args.metadata)


if __name__ == "__main__":
    sys.exit(main())
