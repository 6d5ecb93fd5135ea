"""Body compression on the edge: zstd by default, what the real cloud stores, and the
fallback to gzip when a cloud older than the edge answers 415 to zstd."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cloud.testing import CloudServer
from edgebuf.config import load_settings
from edgebuf.delivery.http import HttpTransport


def body(n: int, prefix: str = "r") -> bytes:
    records = [
        {
            "record_id": f"{prefix}-{i}",
            "seq": i + 1,
            "timestamp": 1_767_225_600.0 + i,
            "prediction": {"detections": [{"class_name": "part", "confidence": 0.5}]},
        }
        for i in range(n)
    ]
    return json.dumps(
        {"device_id": "cam-z", "batch_id": f"b-{prefix}", "records": records}
    ).encode()


class _OldCloud(BaseHTTPRequestHandler):
    """A cloud from before zstd: 415 to any Content-Encoding but gzip."""

    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "identity")
        _OldCloud.seen.append(encoding)
        ok = encoding in ("gzip", "identity")
        answer = json.dumps(
            {"accepted": 1, "duplicates": 0}
            if ok
            else {"detail": f"unsupported Content-Encoding {encoding!r}"}
        ).encode()
        self.send_response(200 if ok else 415)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def old_cloud() -> Iterator[str]:
    _OldCloud.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OldCloud)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_settings_choose_zstd_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().wire_compression == "zstd"
    assert load_settings(gzip=False).wire_compression == "none"  # the older switch still works
    assert load_settings(gzip=True).wire_compression == "gzip"
    assert load_settings(gzip=True, compression="none").wire_compression == "none"
    monkeypatch.setenv("EDGEBUF_COMPRESSION", "gzip")
    assert load_settings().wire_compression == "gzip"
    from edgebuf.errors import ConfigError

    with pytest.raises(ConfigError):
        load_settings(compression="brotli")


def test_the_real_cloud_stores_zstd_bodies(tmp_path) -> None:
    with CloudServer(f"sqlite:///{tmp_path}/cloud.db") as cloud:
        transport = HttpTransport(cloud.url, compression="zstd")
        try:
            result = transport.send(body(200))
            assert (result.status, result.accepted, result.duplicates) == (200, 200, 0)
            assert transport.compression == "zstd"  # no fallback: this cloud takes it
        finally:
            transport.close()


def test_a_415_to_zstd_falls_back_to_gzip_for_good(old_cloud: str) -> None:
    transport = HttpTransport(old_cloud, compression="zstd")
    try:
        first = transport.send(body(50))
        assert first.status == 200  # not a 415 the sender would bisect and dead-letter
        assert _OldCloud.seen == ["zstd", "gzip"]
        assert transport.compression == "gzip"
        assert transport.send(body(50, "s")).status == 200
        assert _OldCloud.seen == ["zstd", "gzip", "gzip"]  # one extra request, once
        assert transport.send(b"{}").status == 200  # small bodies go uncompressed
        assert _OldCloud.seen[-1] == "identity"
    finally:
        transport.close()


def test_gzip_is_sent_as_gzip_from_the_first_request(old_cloud: str) -> None:
    transport = HttpTransport(old_cloud, compression="gzip")
    try:
        assert transport.send(body(50)).status == 200
        assert _OldCloud.seen == ["gzip"]
    finally:
        transport.close()


def test_zstd_compression_is_safe_from_many_threads() -> None:
    # One shared ZstdCompressor used by the backlog lane's workers at once crashed the
    # edge process (SIGSEGV): run the same pattern in a child so a crash is a failure.
    code = """
import threading, zstandard
from edgebuf.delivery.http import compressor
compress = compressor("zstd")
bodies = [bytes([65 + i]) * (200_000 + i) for i in range(8)]
bad = []
def work(i):
    d = zstandard.ZstdDecompressor()
    for _ in range(40):
        if d.decompress(compress(bodies[i])) != bodies[i]:
            bad.append(i)
threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not bad, bad
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
