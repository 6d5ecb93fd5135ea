"""Helpers to run the real cloud service in a subprocess, for tests, drills and notebooks.

    from cloud.testing import run_cloud_server

    with run_cloud_server("sqlite:///tmp/x.db") as base_url:
        httpx.post(f"{base_url}/log", json=batch)

    with run_cloud_server(url, with_process=True) as (base_url, proc):
        proc.send_signal(signal.SIGSTOP)    # simulate a hung server

`CloudServer` is the object underneath, for scenarios that kill and restart the service
on the same port (`kill()`, `pause()`, `resume()`, `start()` again). The server is a real
`python -m cloud` process; it is always stopped on exit, even when it was paused.

Only the standard library is imported here, so edge tests can use it without FastAPI.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CloudServer", "free_port", "run_cloud_server", "wait_ready"]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_ready(
    base_url: str, timeout: float = 30.0, process: subprocess.Popen[Any] | None = None
) -> None:
    """Poll `GET {base_url}/ready` until it answers 200; raise TimeoutError past `timeout`.

    If `process` exits meanwhile, raise RuntimeError at once instead of waiting it out.
    """
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with status {process.returncode} before ready")
        try:
            with urllib.request.urlopen(f"{base_url}/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
                last_error = f"status {answer.status}"
        except urllib.error.HTTPError as error:
            last_error = f"status {error.code}"
        except (OSError, urllib.error.URLError) as error:
            last_error = str(error)
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} not ready after {timeout:.0f} s ({last_error})")


class CloudServer:
    """One `python -m cloud` subprocess on a fixed port (kept across restarts)."""

    def __init__(
        self,
        database_url: str,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 30.0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.env = dict(env or {})
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        fd, log_name = tempfile.mkstemp(prefix="edgebuf-cloud-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_name)

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:8123` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The argv used to start the server."""
        return [
            sys.executable,
            "-m",
            "cloud",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--database-url",
            self.database_url,
            "--log-level",
            "warning",
            "--no-access-log",
            *self.extra_args,
        ]

    def start(self, wait: bool = True) -> str:
        """Start the process (if not running) and, with `wait`, block until /ready is 200."""
        if self.process is None or self.process.poll() is not None:
            env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    self.command(), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd
                )
        if wait:
            try:
                wait_ready(self.url, self.ready_timeout, self.process)
            except (RuntimeError, TimeoutError) as error:
                self.stop()
                raise RuntimeError(f"{error}; server log:\n{self.log_tail()}") from None
        return self.url

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's combined stdout/stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def pause(self) -> None:
        """SIGSTOP the server: connections hang, as with a frozen host."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the server (a crash: no graceful shutdown) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), escalating to SIGKILL after `timeout`. Idempotent."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if hasattr(signal, "SIGCONT"):
                proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def close(self) -> None:
        """Stop the server and delete its log file."""
        self.stop()
        with contextlib.suppress(OSError):
            self.log_path.unlink()

    def __enter__(self) -> CloudServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def run_cloud_server(
    database_url: str,
    port: int | None = None,
    *,
    with_process: bool = False,
    env: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 30.0,
) -> Iterator[Any]:
    """Run `python -m cloud` on a free (or given) port until the block exits.

    Yields the base URL, or `(base_url, popen)` with `with_process=True` so the caller
    can SIGKILL/SIGSTOP it. The process is stopped on exit in every case.
    """
    server = CloudServer(
        database_url, port, env=env, extra_args=extra_args, ready_timeout=ready_timeout
    )
    try:
        server.start()
        yield (server.url, server.process) if with_process else server.url
    finally:
        server.close()


def stored_record_ids(sqlite_file: str | Path) -> set[str]:
    """Record ids a SQLite cloud database holds, read from the file itself after an
    integrity check (for power-loss tests: the cloud process is gone)."""
    import sqlite3

    path = Path(sqlite_file)
    if not path.exists():
        return set()
    conn = sqlite3.connect(path)
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise AssertionError(f"the cloud's {path} failed integrity_check: {check}")
        return {r for (r,) in conn.execute("SELECT record_id FROM predictions")}
    finally:
        conn.close()
