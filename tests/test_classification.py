"""Dead-letter only on positive evidence; a 2xx marks rows sent only when it is the cloud's
acknowledgement; a delivery fault is visible and logged once per change; TLS settings fail
at construction.

Policy runs on a fake clock with ``ScriptedCloud`` or a tiny Transport; the HTTP side runs
the real ``HttpTransport`` against the real cloud and against small local servers that
answer as a captive portal or nginx would.
"""

from __future__ import annotations

import gzip
import http.server
import json
import logging
import threading
from collections.abc import Iterator

import pytest
from support import DET, drive

from cloud.settings import CloudSettings
from cloud.testing import CloudServer
from edgebuf import ConfigError, EnhancedAsyncLoggingClient
from edgebuf.delivery.http import HttpTransport
from edgebuf.delivery.policy import Verdict, classify
from edgebuf.delivery.transport import SendResult
from edgebuf.lab.testing import FAST_SETTINGS, Reply, ScriptedCloud


def log_n(client, n):
    return [client.log_prediction(DET, image_id=f"f{i}") for i in range(n)]


def counts(client):
    c = client.store.counts()
    return c["pending"] + c["sending"], c["sent"], c["failed"]


# --------------------------------------------------------------------- policy, scripted
@pytest.mark.parametrize(
    "reply,kind",
    [
        (Reply(400), "proxy"),  # nginx: no/bad client certificate, or any proxy's 400 page
        (Reply(403), "proxy"),  # a WAF
        (Reply(422), "proxy"),  # a 422 that is not in the cloud's words
        (Reply(400, refused="request"), "cloud"),  # the cloud: bad gzip, not the records
        (Reply(200, ack=False), "not_ack"),  # a captive portal's 200 page
    ],
)
def test_no_evidence_about_the_records_keeps_them_pending(make_client, cloud, clock, reply, kind):
    client = make_client(max_retries=10)
    cloud.script(*[reply] * 4)
    ids = log_n(client, 32)
    client.shipper.run_once()
    assert counts(client) == (32, 0, 0)  # nothing dead-lettered, nothing marked sent
    fault = client.get_buffer_status()["delivery"]["fault"]
    assert fault["kind"] == kind and fault["attempts"] == 1
    drive(client, clock)  # the script runs out: the cloud acknowledges
    assert counts(client) == (0, 32, 0)
    assert set(cloud.stored_seqs("cam-1")) == set(range(1, 33)) and len(ids) == 32
    assert client.get_buffer_status()["delivery"]["fault"] is None


def test_the_clouds_refusal_of_one_record_dead_letters_only_it(make_client, cloud, clock):
    client = make_client()
    ids = log_n(client, 32)
    cloud.poison = {ids[5]}  # the cloud's 422 with refused="record" for any batch holding it
    drive(client, clock)
    assert counts(client) == (0, 31, 1)
    assert client.store.record_ids("failed") == [ids[5]]


class SizeLimitProxy(ScriptedCloud):
    """A proxy in front of the cloud refusing any body holding a large record with its own
    413 (not the cloud's words)."""

    def __init__(self, big: set[str]) -> None:
        super().__init__()
        self.big = big

    def send(self, body: bytes) -> SendResult:
        parsed = json.loads(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
        if {r["record_id"] for r in parsed["records"]} & self.big:
            self.statuses.append(413)
            return SendResult(413, error="HTTP 413 not from the cloud: 413 Request Entity Too Large")
        return super().send(body)


def test_a_proxys_413_dead_letters_a_record_only_once_the_rest_of_its_batch_went_through(
    make_client, clock
):
    proxy = SizeLimitProxy(set())
    client = make_client(transport=proxy)
    ids = log_n(client, 8)
    proxy.big = {ids[0]}  # the first half of the bisection: tried before its siblings
    drive(client, clock)
    assert counts(client) == (0, 7, 1)
    assert client.store.record_ids("failed") == [ids[0]]


def test_a_proxys_413_for_a_record_alone_is_a_retryable_fault(make_client, clock):
    proxy = SizeLimitProxy(set())
    client = make_client(transport=proxy, batch_size=1)
    (rid,) = log_n(client, 1)
    proxy.big = {rid}
    for _ in range(5):
        clock.advance(120)
        client.connectivity.check_once()
        client.shipper.run_once()
    assert counts(client) == (1, 0, 0)
    assert client.get_buffer_status()["delivery"]["fault"]["kind"] == "proxy"
    proxy.big = set()  # the proxy's limit is raised
    drive(client, clock)
    assert counts(client) == (0, 1, 0)


class BadAcks(ScriptedCloud):
    """Stores the batch, then answers with an acknowledgement that does not fit it."""

    def __init__(self, wrong: str) -> None:
        super().__init__()
        self.wrong = wrong

    def send(self, body: bytes) -> SendResult:
        ok = super().send(body)
        if not self.wrong:
            return ok
        if self.wrong == "batch":
            return SendResult(200, batch_id="someone-else", accepted=ok.accepted,
                              duplicates=ok.duplicates)
        return SendResult(200, batch_id=ok.batch_id, accepted=0, duplicates=0)


@pytest.mark.parametrize("wrong", ["batch", "count"])
def test_an_acknowledgement_of_another_batch_or_count_marks_nothing_sent(
    make_client, clock, wrong
):
    cloud = BadAcks(wrong)
    client = make_client(transport=cloud)
    log_n(client, 32)
    client.shipper.run_once()
    assert counts(client) == (32, 0, 0)
    assert client.get_buffer_status()["delivery"]["fault"]["kind"] == "not_ack"
    cloud.wrong = ""
    drive(client, clock)
    assert counts(client) == (0, 32, 0)  # resent; the cloud counts them as duplicates


def test_a_fault_is_logged_once_per_change_not_per_retry(make_client, cloud, clock, caplog):
    client = make_client(max_retries=50)
    cloud.script(*[Reply(None)] * 6, *[Reply(400)] * 6)
    log_n(client, 32)
    with caplog.at_level(logging.INFO, logger="edgebuf.delivery"):
        drive(client, clock)
    assert counts(client) == (0, 32, 0)
    faults = [r.getMessage() for r in caplog.records if r.name == "edgebuf.delivery"]
    assert len(faults) == 3, faults  # network, then proxy, then "works again"
    assert faults[0].startswith("delivery fault (network)")
    assert faults[1].startswith("delivery fault (proxy)")
    assert "works again after 6 failed attempts" in faults[2]


def test_status_shows_the_fault_with_its_reason(make_client, cloud, capsys):
    client = make_client()
    cloud.script(Reply(400))
    log_n(client, 32)
    client.shipper.run_once()
    client.monitor.print_status()
    out = capsys.readouterr().out
    assert "FAULT         proxy since" in out and "HTTP 400" in out


# --------------------------------------------------------------------- the real transport
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
def test_a_proxys_answer_is_a_fault_not_a_refusal(canned, status, content_type, body, kind,
                                                  words):
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
    server = CloudServer(f"sqlite:///{tmp_path_factory.mktemp('cloud') / 'c.db'}",
                         env={"EDGEBUF_MAX_BATCH_RECORDS": "3"})
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
            Verdict.ACK, "b-1", 2, 0)
        bad = transport.send(_batch([_record(3), _record(4, seq="not a number")]))
        assert (bad.status, bad.refused, classify(bad)) == (422, "record", Verdict.REJECT)
        big = transport.send(_batch([_record(i) for i in range(5, 9)]))
        assert (big.status, big.refused, classify(big)) == (413, "batch", Verdict.SPLIT)
    finally:
        transport.close()
    raw = HttpTransport(real_cloud.url, use_gzip=False)
    try:
        resp = raw._client.post("/log", content=b"not gzip",  # noqa: SLF001
                                headers={"Content-Encoding": "gzip"})
    finally:
        raw.close()
    body = resp.json()
    assert (resp.status_code, body["service"], body["refused"]) == (400, "edgebuf-cloud",
                                                                    "request")


def test_the_clouds_record_refusal_names_the_records_at_fault(real_cloud):
    import httpx

    resp = httpx.post(f"{real_cloud.url}/log", content=_batch([_record(1), _record(2, seq=-5)]),
                      headers={"Content-Type": "application/json"})
    body = resp.json()
    assert (resp.status_code, body["service"], body["refused"], body["records"]) == (
        422, "edgebuf-cloud", "record", [1])


# --------------------------------------------------------------------- settings
def _tls_files(tmp_path):
    from test_tls import CA

    ca = CA(tmp_path / "ca", "unit-ca")
    one, two = ca.issue("cam-1", tmp_path / "one"), ca.issue("cam-2", tmp_path / "two")
    return ca, one, two


def test_tls_settings_fail_at_construction(tmp_path, monkeypatch):
    pytest.importorskip("cryptography")
    ca, one, two = _tls_files(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    base = {"endpoint": "https://127.0.0.1:9", "db_path": tmp_path / "b.db", "device_id": "d"}
    cases = {
        "no such file": {"ca_bundle": tmp_path / "missing.pem"},
        "not a readable PEM of CAs": {"ca_bundle": garbage},
        "cannot load the certificate and its key": {
            "client_cert": one.cert, "client_key": two.key},  # mismatched key
        "client_key is set without client_cert": {"client_key": one.key},
    }
    for words, kwargs in cases.items():
        with pytest.raises(ConfigError, match=words):
            EnhancedAsyncLoggingClient(**base, **kwargs)
    with pytest.raises(ConfigError, match="need an https:// endpoint"):
        EnhancedAsyncLoggingClient(**{**base, "endpoint": "http://127.0.0.1:9"}, ca_bundle=ca.pem)
    # an encrypted key would make OpenSSL prompt on the terminal: refused instead
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(one.key.read_bytes(), None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(ConfigError, match="is encrypted"):
        EnhancedAsyncLoggingClient(**base, client_cert=one.cert, client_key=locked)
    assert not (tmp_path / "b.db").exists()  # nothing opened
    # from the environment too
    monkeypatch.setenv("EDGEBUF_CA_BUNDLE", str(ca.pem))
    monkeypatch.setenv("EDGEBUF_CLIENT_CERT", str(one.cert))
    monkeypatch.setenv("EDGEBUF_CLIENT_KEY", str(one.key))
    client = EnhancedAsyncLoggingClient(**base)
    try:
        assert client.settings.client_cert == one.cert
    finally:
        client.close()
    monkeypatch.setenv("EDGEBUF_CLIENT_KEY", str(two.key))
    with pytest.raises(ConfigError, match="cannot load"):
        EnhancedAsyncLoggingClient(**base)


def test_cloud_certificate_settings_are_checked():
    with pytest.raises(ValueError, match="trusted proxy must be an IP address"):
        CloudSettings(trusted_proxies="nginx.local")
    with pytest.raises(ValueError, match="cert_device_binding needs trusted_proxies"):
        CloudSettings(cert_device_binding=True)
    s = CloudSettings(trusted_proxies="127.0.0.1, 10.0.0.0/8", cert_device_binding=True)
    assert s.trusted_proxies == ["127.0.0.1", "10.0.0.0/8"]
