"""The real ``HttpTransport`` tells the cloud's own answers from a proxy's: against the
real cloud (its acknowledgement and its recognisable refusals) and against small local
servers answering as a captive portal, nginx or a WAF would."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import httpx
import pytest
from support import DET

from cloud.testing import CloudServer
from edgebuf import EnhancedAsyncLoggingClient
from edgebuf.delivery.http import HttpTransport
from edgebuf.delivery.policy import Verdict, classify
from edgebuf.lab.testing import FAST_SETTINGS


def log_n(client, n):
    return [client.log_prediction(DET, image_id=f"f{i}") for i in range(n)]


def counts(client):
    c = client.store.counts()
    return c["pending"] + c["sending"], c["sent"], c["failed"]


class _Canned(http.server.BaseHTTPRequestHandler):
    status = 200
    content_type = "text/html"
    body = b""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    def _answer(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def canned() -> Iterator[type[_Canned]]:
    handler = type("Handler", (_Canned,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler
    server.shutdown()
    server.server_close()


PORTAL = b"<html><head><title>Welcome to Factory WiFi</title></head><body>Log in</body></html>"
NGINX_400 = (
    b"<html>\r\n<head><title>400 No required SSL certificate was sent</title></head>\r\n"
    b"<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n</body>\r\n</html>\r\n"
)


def test_a_captive_portals_200_never_marks_records_sent(tmp_path, canned):
    canned.status, canned.body = 200, PORTAL
    client = EnhancedAsyncLoggingClient(
        endpoint=canned.url, db_path=tmp_path / "b.db", device_id="cam-1", **FAST_SETTINGS
    ).start()
    try:
        log_n(client, 40)
        assert client.flush(timeout=1.5) is False
        assert counts(client) == (40, 0, 0)
        fault = client.get_buffer_status()["delivery"]["fault"]
        assert fault["kind"] == "not_ack" and "Welcome to Factory WiFi" in fault["reason"]
    finally:
        client.close(timeout=1)


@pytest.mark.parametrize(
    "status,content_type,body,kind,words",
    [
        (400, "text/html", NGINX_400, "tls", "No required SSL certificate was sent"),
        (403, "text/html", b"<title>403 Forbidden</title>", "proxy", "403 Forbidden"),
        (400, "application/json", b'{"detail": "bad"}', "proxy", "bad"),  # not the cloud's
    ],
)
def test_a_proxys_answer_is_a_fault_not_a_refusal(canned, status, content_type, body, kind, words):
    canned.status, canned.content_type, canned.body = status, content_type, body
    transport = HttpTransport(canned.url)
    try:
        result = transport.send(b'{"device_id":"d","batch_id":"b","records":[]}')
    finally:
        transport.close()
    assert classify(result) is Verdict.RETRY
    assert result.refused is None and result.fault == kind and words in (result.error or "")


@pytest.fixture(scope="module")
def real_cloud(tmp_path_factory):
    server = CloudServer(
        f"sqlite:///{tmp_path_factory.mktemp('cloud') / 'c.db'}",
        env={"EDGEBUF_MAX_BATCH_RECORDS": "3"},
    )
    server.start()
    yield server
    server.close()


def _batch(records: list[dict], batch_id: str = "b-1") -> bytes:
    return json.dumps({"device_id": "cam-9", "batch_id": batch_id, "records": records}).encode()


def _record(i: int, **extra) -> dict:
    return {"record_id": f"r{i}", "seq": i, "timestamp": 1.7e9, "prediction": DET, **extra}


def test_the_real_clouds_answers_are_recognised(real_cloud):
    transport = HttpTransport(real_cloud.url, use_gzip=False)
    try:
        ack = transport.send(_batch([_record(1), _record(2)]))
        assert (classify(ack), ack.batch_id, ack.accepted, ack.duplicates) == (
            Verdict.ACK,
            "b-1",
            2,
            0,
        )
        bad = transport.send(_batch([_record(3), _record(4, seq="not a number")]))
        assert (bad.status, bad.refused, classify(bad)) == (422, "record", Verdict.REJECT)
        big = transport.send(_batch([_record(i) for i in range(5, 9)]))
        assert (big.status, big.refused, classify(big)) == (413, "batch", Verdict.SPLIT)
    finally:
        transport.close()
    raw = HttpTransport(real_cloud.url, use_gzip=False)
    try:
        resp = raw._client.post(
            "/log",
            content=b"not gzip",  # noqa: SLF001
            headers={"Content-Encoding": "gzip"},
        )
    finally:
        raw.close()
    body = resp.json()
    assert (resp.status_code, body["service"], body["refused"]) == (400, "edgebuf-cloud", "request")


def test_the_clouds_record_refusal_names_the_records_at_fault(real_cloud):
    resp = httpx.post(
        f"{real_cloud.url}/log",
        content=_batch([_record(1), _record(2, seq=-5)]),
        headers={"Content-Type": "application/json"},
    )
    body = resp.json()
    assert (resp.status_code, body["service"], body["refused"], body["records"]) == (
        422,
        "edgebuf-cloud",
        "record",
        [1],
    )
