"""The edge through a real TLS hop: its own nginx master (Debian's package) terminating
TLS with a CA made here, verifying device certificates, in front of the real cloud.

nginx renders deploy/nginx/edgebuf.conf, the file operators deploy. Without nginx the
module skips, except under CI=true, where it fails (.ci/run installs nginx).
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cloud.testing import CloudServer, free_port
from edgebuf import EnhancedAsyncLoggingClient
from edgebuf.lab.testing import FAST_SETTINGS
from edgebuf.lab.verify import fetch_predictions
from edgebuf.ops.cli import main as cli_main

pytest.importorskip("cryptography")
from tls_pki import CA  # noqa: E402

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
TEMPLATE = ROOT / "deploy" / "nginx" / "edgebuf.conf"
DET = {"detections": [{"class_name": "part", "confidence": 0.9, "box": [1.0, 2.0, 3.0, 4.0]}]}


def _nginx() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        reason = "nginx is not installed (apt-get install -y nginx; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return found


# --------------------------------------------------------------------- nginx
def render(template: str, values: dict[str, str]) -> str:
    """Fill the ``${NAME}`` placeholders, as envsubst with the names listed would."""
    lines = []
    for line in template.splitlines():
        if not line.lstrip().startswith("#"):
            for name, value in values.items():
                line = line.replace("${" + name + "}", value)
            assert "${" not in line, f"placeholder not filled: {line}"
        lines.append(line)
    return "\n".join(lines) + "\n"


class Nginx:
    """Its own nginx master (``daemon off``, everything under ``prefix``), stopped on close."""

    def __init__(self, prefix: Path, values: dict[str, str], crl: Path | None = None) -> None:
        self.binary = _nginx()
        self.prefix = prefix
        self.port = free_port()
        prefix.mkdir(parents=True, exist_ok=True)
        site = render(TEMPLATE.read_text(), {**values, "LISTEN": f"127.0.0.1:{self.port}"})
        if crl is not None:  # the template's own (commented) ssl_crl line, switched on
            line = "# ssl_crl /etc/nginx/edgebuf/devices.crl;"
            assert line in site
            site = site.replace(line, f"ssl_crl {crl};")
        (prefix / "edgebuf.conf").write_text(site)
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers read our 0700 tmp dirs
        temp = "\n".join(
            f"    {kind}_temp_path {prefix}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(
            f"{user}daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/error.log info;\n"
            "events { worker_connections 64; }\n"
            f"http {{\n    access_log {prefix}/access.log;\n{temp}\n"
            f"    include {prefix}/edgebuf.conf;\n}}\n"
        )
        self.url = f"https://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            self.binary,
            "-c",
            str(self.conf),
            "-p",
            str(self.prefix),
            "-e",
            str(self.prefix / "error.log"),
        ]
        check = subprocess.run([*argv, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.process = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.error_log()
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"nginx did not listen on {self.port}: {self.error_log()}")

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful shutdown of master + worker
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("pki")
    ca = CA(base / "ca", "edgebuf-test-ca")
    other = CA(base / "other", "some-other-ca")
    return ca, other, ca.issue("127.0.0.1", base / "server", server=True)


@pytest.fixture(scope="module")
def revoked(tmp_path_factory, pki):
    """A device certificate of the right CA, listed in the CRL nginx is given."""
    ca, _, _ = pki
    base = tmp_path_factory.mktemp("revoked")
    device = ca.issue("cam-revoked", base)
    return device, ca.crl([device], base / "devices.crl")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    base = tmp_path_factory.mktemp("cloud")
    server = CloudServer(
        f"sqlite:///{base / 'cloud.db'}",
        env={"EDGEBUF_TRUSTED_PROXIES": "127.0.0.1", "EDGEBUF_CERT_DEVICE_BINDING": "true"},
    )
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, pki, revoked, cloud):
    ca, _, server_cert = pki
    nginx = Nginx(
        tmp_path_factory.mktemp("nginx"),
        {
            "SERVER_CERT": str(server_cert.cert),
            "SERVER_KEY": str(server_cert.key),
            "CLIENT_CA": str(ca.pem),
            "CLOUD_UPSTREAM": f"127.0.0.1:{cloud.port}",
        },
        crl=revoked[1],
    )
    nginx.start()
    yield nginx
    nginx.stop()


def edge(
    proxy: Nginx, db: Path, device_id: str, *, start: bool = True, **tls
) -> EnhancedAsyncLoggingClient:
    client = EnhancedAsyncLoggingClient(
        endpoint=proxy.url, db_path=db, device_id=device_id, **FAST_SETTINGS, **tls
    )
    return client.start() if start else client


def log_n(client: EnhancedAsyncLoggingClient, n: int) -> list[str]:
    return [client.log_prediction(DET, image_id=f"f{i}") for i in range(n)]


def stored(cloud: CloudServer, device_id: str) -> collections.Counter[str]:
    return collections.Counter(p["record_id"] for p in fetch_predictions(cloud.url, device_id))


def assert_held(client: EnhancedAsyncLoggingClient, n: int, kind: str, words: str) -> dict:
    """Nothing delivered and nothing dead-lettered: all ``n`` pending, the reason shown."""
    assert client.flush(timeout=2.0) is False
    status = client.monitor.get_full_status()
    counts = status["counts"]
    assert (counts["pending"] + counts["sending"], counts["failed"], counts["sent"]) == (n, 0, 0)
    fault = status["delivery"]["fault"]
    assert fault is not None and fault["kind"] == kind, status["delivery"]
    assert words in fault["reason"], fault
    return status


def test_delivery_through_nginx_with_the_device_certificate(tmp_path, pki, cloud, proxy):
    ca, _, _ = pki
    device = ca.issue("cam-good", tmp_path / "device")
    client = edge(
        proxy,
        tmp_path / "b.db",
        "cam-good",
        ca_bundle=ca.pem,
        client_cert=device.cert,
        client_key=device.key,
    )
    try:
        ids = log_n(client, 300)
        assert client.flush(timeout=20)
        status = client.monitor.get_full_status()
        assert status["counts"]["sent"] == 300 and status["delivery"]["fault"] is None
    finally:
        client.close()
    assert stored(cloud, "cam-good") == collections.Counter(ids)  # each once, all of them


def test_unknown_ca_keeps_records_pending_with_a_tls_error(tmp_path, pki, cloud, proxy, caplog):
    ca, other, _ = pki
    device = ca.issue("cam-wrong-ca", tmp_path / "device")
    client = edge(
        proxy,
        tmp_path / "b.db",
        "cam-wrong-ca",
        ca_bundle=other.pem,
        client_cert=device.cert,
        client_key=device.key,
    )
    try:
        with caplog.at_level(logging.WARNING, logger="edgebuf.delivery"):
            log_n(client, 40)
            status = assert_held(client, 40, "tls", "certificate is not trusted")
        assert status["delivery"]["tls_error"] == status["delivery"]["fault"]["reason"]
        assert status["delivery"]["fault"]["attempts"] > 1  # sends and probes, ...
        faults = [r for r in caplog.records if r.name == "edgebuf.delivery"]
        assert len(faults) == 1, [r.getMessage() for r in faults]  # ... logged once
    finally:
        client.close()
    assert stored(cloud, "cam-wrong-ca") == {}


def test_no_client_certificate_is_refused_by_nginx_and_nothing_dead_letters(
    tmp_path, pki, cloud, proxy, capsys
):
    ca, _, _ = pki
    client = edge(proxy, tmp_path / "b.db", "cam-no-cert", start=False, ca_bundle=ca.pem)
    try:
        log_n(client, 40)
        client.shipper.run_once()  # one send before any probe, so rows keep its error
        client.start()
        assert_held(client, 40, "tls", "No required SSL certificate was sent")
        client.monitor.print_status()
        assert "No required SSL certificate was sent" in capsys.readouterr().out
        # `edgebuf status` reads the file alone, beside the running client: the reason too
        shown = CliRunner().invoke(cli_main, ["status", "--db", str(tmp_path / "b.db")])
        assert shown.exit_code == 0, shown.output
        assert "held by     HTTP 400 not from the cloud: 400 No required SSL" in shown.output
    finally:
        client.close()
    assert stored(cloud, "cam-no-cert") == {}


def test_certificate_of_another_ca_is_refused(tmp_path, pki, cloud, proxy):
    ca, other, _ = pki
    device = other.issue("cam-foreign", tmp_path / "device")
    client = edge(
        proxy,
        tmp_path / "b.db",
        "cam-foreign",
        ca_bundle=ca.pem,
        client_cert=device.cert,
        client_key=device.key,
    )
    try:
        log_n(client, 40)
        assert_held(client, 40, "tls", "SSL certificate error")
    finally:
        client.close()
    assert stored(cloud, "cam-foreign") == {}


def test_expired_certificate_holds_then_a_new_one_delivers_everything_once(
    tmp_path, pki, cloud, proxy
):
    ca, _, _ = pki
    device = ca.issue("cam-renew", tmp_path / "device", expired=True)
    tls = {"ca_bundle": ca.pem, "client_cert": device.cert, "client_key": device.key}
    db = tmp_path / "b.db"
    client = edge(proxy, db, "cam-renew", **tls)
    try:
        ids = log_n(client, 120)
        assert_held(client, 120, "tls", "SSL certificate error")
    finally:
        client.close()
    assert stored(cloud, "cam-renew") == {}
    ca.issue("cam-renew", tmp_path / "device")  # renewed in place: same file names
    client = edge(proxy, db, "cam-renew", **tls)
    try:
        ids += log_n(client, 30)
        assert client.flush(timeout=20)
        counts = client.monitor.get_full_status()["counts"]
        assert (counts["sent"], counts["pending"], counts["failed"]) == (150, 0, 0)
    finally:
        client.close()
    assert stored(cloud, "cam-renew") == collections.Counter(ids)


def test_revoked_certificate_is_refused(tmp_path, pki, revoked, cloud, proxy):
    ca, _, _ = pki
    device, _ = revoked
    client = edge(
        proxy,
        tmp_path / "b.db",
        "cam-revoked",
        ca_bundle=ca.pem,
        client_cert=device.cert,
        client_key=device.key,
    )
    try:
        log_n(client, 40)
        assert_held(client, 40, "tls", "SSL certificate error")
    finally:
        client.close()
    assert stored(cloud, "cam-revoked") == {}
    assert "certificate revoked" in proxy.error_log()


def test_the_cloud_binds_the_certificate_to_its_device(tmp_path, pki, cloud, proxy):
    ca, _, _ = pki
    device = ca.issue("cam-a", tmp_path / "device")
    client = edge(
        proxy,
        tmp_path / "b.db",
        "cam-b",
        ca_bundle=ca.pem,
        client_cert=device.cert,
        client_key=device.key,
    )
    try:
        log_n(client, 40)
        assert_held(client, 40, "cloud", "client certificate may only act for device 'cam-a'")
    finally:
        client.close()
    assert stored(cloud, "cam-b") == {}


def _forged(device_id: str) -> tuple[bytes, dict[str, str]]:
    body = (
        f'{{"device_id":"{device_id}","batch_id":"forged-{device_id}","records":[{{"record_id":'
        f'"r-{device_id}","seq":1,"timestamp":{time.time()},"prediction":{{"detections":[]}}}}]}}'
    )
    headers = {
        "X-Client-Verify": "SUCCESS",
        "X-Client-Subject": "CN=cam-other,O=forged",
        "Content-Type": "application/json",
    }
    return body.encode(), headers


def test_certificate_headers_count_only_from_a_trusted_proxy(cloud):
    # From 127.0.0.1 (the trusted proxy's address) the headers bind the batch: refused.
    body, headers = _forged("cam-direct-1")
    answer = httpx.post(f"{cloud.url}/log", content=body, headers=headers)
    assert answer.status_code == 403, answer.text
    assert answer.json()["service"] == "edgebuf-cloud"
    # The same headers from another address are ignored: the batch is stored as sent.
    body, headers = _forged("cam-direct-2")
    untrusted = httpx.HTTPTransport(local_address="127.0.0.3")
    with httpx.Client(transport=untrusted) as http:
        answer = http.post(f"{cloud.url}/log", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert stored(cloud, "cam-direct-2") == {"r-cam-direct-2": 1}
