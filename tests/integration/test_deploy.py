"""The deployment files, checked as far as a machine without a container engine allows:
the Kubernetes manifests against the API schemas (kubernetes-validate, offline), the
compose file's structure, every env var and port against what the code reads, and each
Dockerfile's CMD run here as the container would run it (with the compose environment)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from cloud.settings import CloudSettings
from cloud.testing import free_port
from edgebuf import BufferMonitor
from edgebuf.config import EdgeSettings
from edgebuf.lab.verify import fetch_predictions

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
COMPOSE = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
# Env vars the interpreter or pip read, not our code.
RUNTIME_ENV = re.compile(r"^(PYTHON[A-Z_]*|PIP_[A-Z_]+)$")


def manifests() -> list[dict]:
    docs = []
    for path in K8S:
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def by_kind(kind: str, name: str) -> dict:
    (doc,) = [d for d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def container(workload: dict) -> dict:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


class Dockerfile:
    """The few instructions the tests read: ENV, COPY, EXPOSE and the exec-form CMD."""

    def __init__(self, path: Path) -> None:
        text = re.sub(r"\\\n", " ", path.read_text())
        self.lines = [
            ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")
        ]

    def instructions(self, name: str) -> list[str]:
        return [ln.split(None, 1)[1] for ln in self.lines if ln.split(None, 1)[0] == name]

    @property
    def env(self) -> dict[str, str]:
        out = {}
        for line in self.instructions("ENV"):
            for token in shlex.split(line):
                key, _, value = token.partition("=")
                out[key] = value
        return out

    @property
    def cmd(self) -> list[str]:
        return json.loads(self.instructions("CMD")[-1])

    @property
    def copied(self) -> list[str]:
        return [src for line in self.instructions("COPY") for src in line.split()[:-1]]


EDGE_DOCKERFILE = Dockerfile(DEPLOY / "Dockerfile.edge")
CLOUD_DOCKERFILE = Dockerfile(DEPLOY / "Dockerfile.cloud")


def settings_env_names(settings_cls) -> set[str]:
    """Every environment name a pydantic-settings class reads."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in settings_cls.model_fields.items():
        names.add(f"{prefix}{field_name}".upper())
        alias = field.validation_alias
        for choice in getattr(alias, "choices", [alias] if alias else []):
            if isinstance(choice, str) and choice.isupper():
                names.add(choice)
    return names


def env_read_by_code(name: str) -> bool:
    if name in settings_env_names(EdgeSettings) | settings_env_names(CloudSettings):
        return True
    # Anything else must appear as a literal in the package's own source (the vision
    # module sets and reads ultralytics' YOLO_* variables).
    sources = [*(ROOT / "edgebuf").rglob("*.py"), *(ROOT / "cloud").rglob("*.py")]
    return any(f'"{name}"' in p.read_text() for p in sources)


# --------------------------------------------------------------------- Kubernetes
def test_manifests_validate_against_the_kubernetes_schemas():
    kv = pytest.importorskip("kubernetes_validate")
    docs = manifests()
    assert {d["kind"] for d in docs} == {"Service", "StatefulSet", "Deployment", "Secret"}
    for doc in docs:
        # strict: unknown fields (a typo such as "readinesProbe") fail too; the schemas
        # ship inside the package, so this needs no network.
        kv.validate(doc, kv.latest_version(), strict=True)
    broken = by_kind("StatefulSet", "edge-inference")
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, kv.latest_version(), strict=True)


def test_edge_statefulset_matches_the_design():
    sts = by_kind("StatefulSet", "edge-inference")
    assert sts["spec"]["replicas"] == 1
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    c = container(sts)
    env = {e["name"]: e for e in c["env"]}
    (mount,) = c["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"]
    assert Path(env["BUFFER_DB_PATH"]["value"]).parent == Path(mount["mountPath"])
    assert env["CLOUD_LOGGING_ENDPOINT"]["value"] == "http://logging-service:8001"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["ports"] == [{"name": "http", "containerPort": 8000}]
    svc = by_kind("Service", "edge-inference")
    assert svc["spec"]["ports"][0]["port"] == 8000 and svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["serviceName"] == "edge-inference"
    # The flush on SIGTERM (--flush-timeout 15 + a 5 s close) fits in the grace period.
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 25


def test_logging_deployment_matches_the_design():
    dep = by_kind("Deployment", "logging-service")
    assert dep["spec"]["replicas"] == 2
    c = container(dep)
    (env,) = c["env"]
    ref = env["valueFrom"]["secretKeyRef"]
    assert env["name"] == "DATABASE_URL"
    secret = by_kind("Secret", ref["name"])
    assert ref["key"] in secret["stringData"]
    assert secret["stringData"][ref["key"]].startswith("postgresql+psycopg://")
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["ports"] == [{"name": "http", "containerPort": 8001}]
    svc = by_kind("Service", "logging-service")
    assert svc["spec"]["ports"][0]["port"] == 8001 and svc["spec"]["type"] == "LoadBalancer"
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]


# --------------------------------------------------------------------- compose
def test_compose_matches_the_design():
    services = COMPOSE["services"]
    assert set(services) == {"edge-inference", "logging-service", "postgres"}
    edge, cloud, pg = services["edge-inference"], services["logging-service"], services["postgres"]
    assert edge["ports"] == ["8000:8000"] and cloud["ports"] == ["8001:8001"]
    assert edge["volumes"] == ["edge-buffer:/data"] and cloud["volumes"] == ["logging-data:/data"]
    assert edge["depends_on"] == ["logging-service"]
    for svc in services.values():
        assert svc["restart"] == "unless-stopped"
        assert svc["networks"] == ["vision-network"]
    assert COMPOSE["networks"]["vision-network"]["driver"] == "bridge"
    declared = set(COMPOSE["volumes"])
    assert {"edge-buffer", "logging-data"} <= declared
    for svc in services.values():
        assert {v.split(":")[0] for v in svc.get("volumes", [])} <= declared
    # PostgreSQL only with --profile postgres; the cloud waits for it only then.
    assert pg["profiles"] == ["postgres"] and "profiles" not in edge and "profiles" not in cloud
    assert cloud["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}
    assert edge["environment"]["CLOUD_LOGGING_ENDPOINT"] == "http://logging-service:8001"
    assert Path(edge["environment"]["BUFFER_DB_PATH"]).parent == Path("/data")
    for name, svc in (("edge-inference", edge), ("logging-service", cloud)):
        build = svc["build"]  # the dockerfile path is relative to the context
        dockerfile = (DEPLOY / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile.parent == DEPLOY and dockerfile.exists(), name


# --------------------------------------------------------------------- env and ports
def all_env_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for svc in ("edge-inference", "logging-service"):
        for key in COMPOSE["services"][svc].get("environment", {}):
            names[key] = f"compose {svc}"
    for doc in manifests():
        if doc["kind"] in ("StatefulSet", "Deployment"):
            for e in container(doc).get("env", []):
                names[e["name"]] = f"k8s {doc['metadata']['name']}"
    for label, df in (("Dockerfile.edge", EDGE_DOCKERFILE), ("Dockerfile.cloud", CLOUD_DOCKERFILE)):
        for key in df.env:
            names.setdefault(key, label)
    return names


def test_every_env_var_is_one_the_code_reads():
    names = all_env_names()
    assert {"BUFFER_DB_PATH", "CLOUD_LOGGING_ENDPOINT", "DATABASE_URL", "DEVICE_ID"} <= set(names)
    unread = {
        n: where
        for n, where in names.items()
        if not RUNTIME_ENV.match(n) and not env_read_by_code(n)
    }
    assert unread == {}
    assert not env_read_by_code("BUFFER_PATH")  # the check itself can fail


def test_every_port_is_the_one_the_service_listens_on():
    def port_arg(cmd: list[str]) -> int:
        return int(cmd[cmd.index("--port") + 1])

    edge_port, cloud_port = port_arg(EDGE_DOCKERFILE.cmd), port_arg(CLOUD_DOCKERFILE.cmd)
    assert (edge_port, cloud_port) == (8000, 8001)
    assert EDGE_DOCKERFILE.instructions("EXPOSE") == ["8000"]
    assert CLOUD_DOCKERFILE.instructions("EXPOSE") == ["8001"]
    assert COMPOSE["services"]["edge-inference"]["ports"] == [f"{edge_port}:{edge_port}"]
    assert COMPOSE["services"]["logging-service"]["ports"] == [f"{cloud_port}:{cloud_port}"]
    assert (
        container(by_kind("StatefulSet", "edge-inference"))["ports"][0]["containerPort"]
        == edge_port
    )
    assert (
        container(by_kind("Deployment", "logging-service"))["ports"][0]["containerPort"]
        == cloud_port
    )
    from edgebuf.service.command import edge_command

    defaults = {p.name: p.default for p in edge_command.params}
    assert defaults["port"] == edge_port


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_probe_paths_answer_200_on_the_apps(tmp_path):
    from fastapi.testclient import TestClient

    from cloud.app import create_app
    from edgebuf import EnhancedAsyncLoggingClient
    from edgebuf.lab.testing import ScriptedCloud
    from edgebuf.service.edge import EdgeService, create_edge_app
    from edgebuf.vision.detector import FakeDetector

    buffer = EnhancedAsyncLoggingClient(
        db_path=tmp_path / "b.db", device_id="d", transport=ScriptedCloud()
    )
    service = EdgeService(buffer, FakeDetector, "synthetic")
    service.load()
    cloud_app = create_app(CloudSettings(database_url=f"sqlite:///{tmp_path}/c.db"))
    try:
        with TestClient(create_edge_app(service)) as edge, TestClient(cloud_app) as cloud:
            for doc in manifests():
                if doc["kind"] in ("StatefulSet", "Deployment"):
                    http = edge if doc["kind"] == "StatefulSet" else cloud
                    c = container(doc)
                    for probe in ("livenessProbe", "readinessProbe"):
                        assert http.get(c[probe]["httpGet"]["path"]).status_code == 200
            assert edge.get("/nope").status_code == 404
    finally:
        buffer.close(timeout=1)


def test_dockerfiles_copy_only_files_that_exist():
    for df in (EDGE_DOCKERFILE, CLOUD_DOCKERFILE):
        for src in df.copied:
            assert (ROOT / src).exists(), src
    assert "data/conveyor_yolov8n.pt" in EDGE_DOCKERFILE.copied
    model = EDGE_DOCKERFILE.cmd[EDGE_DOCKERFILE.cmd.index("--model") + 1]
    assert model in EDGE_DOCKERFILE.copied


# --------------------------------------------------------------------- the CMDs, run here
def local_cmd(cmd: list[str], port: int) -> list[str]:
    """The container's CMD with this venv's interpreter, loopback and a free port."""
    exe = {"python": [sys.executable], "edgebuf": [sys.executable, "-m", "edgebuf.ops.cli"]}
    out = [*exe[cmd[0]], *cmd[1:]]
    out[out.index("--host") + 1] = "127.0.0.1"
    out[out.index("--port") + 1] = str(port)
    return out


def local_env(env: dict[str, str], tmp_path: Path, cloud_url: str | None = None) -> dict[str, str]:
    """Container paths under tmp_path; compose service names to the local ports."""
    out = dict(os.environ)
    for key, value in env.items():
        value = value.replace("sqlite:////data/", f"sqlite:///{tmp_path}/data/")
        if value.startswith(("/data/", "/tmp/")):
            value = f"{tmp_path}{value}"
        if cloud_url:
            value = value.replace("http://logging-service:8001", cloud_url)
        out[key] = value
    return out


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not 200 after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def test_the_dockerfile_cmds_start_both_services_and_records_flow(tmp_path):
    pytest.importorskip("ultralytics")
    (tmp_path / "data").mkdir()
    cloud_port, edge_port = free_port(), free_port()
    cloud_url, edge_url = f"http://127.0.0.1:{cloud_port}", f"http://127.0.0.1:{edge_port}"
    cloud_env = {**CLOUD_DOCKERFILE.env, **COMPOSE["services"]["logging-service"]["environment"]}
    cloud_env["DATABASE_URL"] = CLOUD_DOCKERFILE.env["DATABASE_URL"]  # compose's ${...:-default}
    edge_env = {**EDGE_DOCKERFILE.env, **COMPOSE["services"]["edge-inference"]["environment"]}
    logs = tmp_path / "cloud.log", tmp_path / "edge.log"
    with open(logs[0], "wb") as cloud_log, open(logs[1], "wb") as edge_log:
        cloud = subprocess.Popen(
            local_cmd(CLOUD_DOCKERFILE.cmd, cloud_port),
            cwd=ROOT,
            env=local_env(cloud_env, tmp_path),
            stdout=cloud_log,
            stderr=subprocess.STDOUT,
        )
        edge = None
        try:
            wait_http(f"{cloud_url}/ready", cloud, logs[0])
            assert (tmp_path / "data" / "cloud_predictions.db").exists()
            edge = subprocess.Popen(
                local_cmd(EDGE_DOCKERFILE.cmd, edge_port),
                cwd=ROOT,
                env=local_env(edge_env, tmp_path, cloud_url),
                stdout=edge_log,
                stderr=subprocess.STDOUT,
            )
            wait_http(f"{edge_url}/health", edge, logs[1])
            wait_http(f"{edge_url}/ready", edge, logs[1])
            assert (tmp_path / "data" / "prediction_buffer.db").exists()
            status = httpx.get(f"{edge_url}/status").json()
            assert status["edge"]["model"]["version"].startswith("conveyor_yolov8n@")
            deadline = time.monotonic() + 30
            while httpx.get(f"{edge_url}/status").json()["edge"]["frames"] < 3:
                assert time.monotonic() < deadline, logs[1].read_text()[-3000:]
                time.sleep(0.2)
            assert stop(edge) == 0, logs[1].read_text()[-3000:]
            with BufferMonitor(tmp_path / "data" / "prediction_buffer.db") as mon:
                counts = mon.get_full_status()["counts"]
            stored = fetch_predictions(cloud_url, "line1-cam1")
            assert counts["pending"] == 0 and counts["sent"] == len(stored) >= 3
            assert all(i["model_version"].startswith("conveyor_yolov8n@") for i in stored)
            assert stop(cloud) in (
                0,
                -signal.SIGTERM,
            )  # uvicorn re-raises SIGTERM after its shutdown
        finally:
            for proc in (edge, cloud):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
