"""Dead-letter only on positive evidence; a 2xx marks rows sent only when it is the cloud's
acknowledgement; a delivery fault is visible and logged once per change; TLS settings fail
at construction.

Policy runs on a fake clock with ``ScriptedCloud`` or a tiny Transport, no sockets; the
real ``HttpTransport`` against the real cloud and fake proxies is in test_http_answers.py.
"""

from __future__ import annotations

import gzip
import json
import logging

import pytest
from support import DET, drive

from cloud.settings import CloudSettings
from edgebuf import ConfigError, EnhancedAsyncLoggingClient
from edgebuf.delivery.transport import SendResult
from edgebuf.lab.testing import Reply, ScriptedCloud


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
            return SendResult(
                413, error="HTTP 413 not from the cloud: 413 Request Entity Too Large"
            )
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
            return SendResult(
                200, batch_id="someone-else", accepted=ok.accepted, duplicates=ok.duplicates
            )
        return SendResult(200, batch_id=ok.batch_id, accepted=0, duplicates=0)


@pytest.mark.parametrize("wrong", ["batch", "count"])
def test_an_acknowledgement_of_another_batch_or_count_marks_nothing_sent(make_client, clock, wrong):
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


# --------------------------------------------------------------------- settings
def _tls_files(tmp_path):
    pytest.importorskip("cryptography")
    from tls_pki import CA

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
            "client_cert": one.cert,
            "client_key": two.key,
        },  # mismatched key
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
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
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
