"""The FUSE side of the power-cut filesystem: the mfusepy operations over a
``PowerCutState`` and the ``serve`` loop of its child process (``edgebuf.lab.powercut``)."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
import time
from typing import Any

from edgebuf.lab.powermodel import BLOCK, Inode, Metadata, PowerCutState, fusermount


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
