"""``kill_process``: SIGKILL and reap, the crash every drill uses."""

from __future__ import annotations

import subprocess

__all__ = ["kill_process"]


def kill_process(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGKILL ``proc`` (a crash: no cleanup runs in it) and reap it; return its exit code.

    A process that already ended is only reaped. Never raises for a process that is gone.
    """
    if proc.poll() is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # stuck in the kernel (D state): nothing more to do
        return None
