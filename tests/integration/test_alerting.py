"""The alerting rules and the dashboard in deploy/, checked by Prometheus's own tools and
against the services' real /metrics:

* ``promtool check rules`` and ``promtool test rules`` on the shipped files, and every rule
  has a unit test that sees it fire (a copy of the rules with that one rule disabled must
  fail its tests);
* every metric the rules and the dashboard name is exported by a running edge service or
  cloud (real processes, scraped over HTTP);
* a real Prometheus scrapes a running edge service and cloud with the shipped rules
  (``for:`` and range windows scaled down 120x), the cloud is SIGKILLed and the
  cloud-unreachable and backlog alerts fire.

promtool and prometheus come from Debian's ``prometheus`` package (.ci/run installs it);
without them these tests skip outside CI and fail under CI=true.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support import DET, drive

from cloud.testing import CloudServer, free_port
from edgebuf.errors import BufferFullError
from edgebuf.service.edge import EdgeService, create_edge_app
from edgebuf.vision.detector import FakeDetector

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted(PROM_DIR.glob("*.rules.yml"))
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "edgebuf.json"
EXAMPLE_CONFIG = PROM_DIR / "prometheus.yml"
# Series Prometheus itself makes (target health, alert state), not any service's.
PROMETHEUS_MADE = {"up", "ALERTS", "ALERTS_FOR_STATE"}
EDGE_JOB, CLOUD_JOB = "edgebuf-edge", "edgebuf-cloud"  # the job names the rules expect
SPEEDUP = 120  # the real-Prometheus test runs the rules' clocks this much faster


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package 'prometheus'; .ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)


def rules() -> list[dict[str, Any]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out


# --------------------------------------------------------------------- PromQL metric names
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names,
    strings, durations and Grafana variables are not names)."""
    names = set(_NAME_MATCHER.findall(expr))
    text = _STRING.sub('""', expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables: $edge, ${ds}
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = _GROUPING.sub(" ", text)  # label lists of by/without/on/ignoring/group_*
    text = re.sub(r"\b\d[\w.]*", " ", text)  # numbers and durations (1e3, 0x1f, 5m)
    names |= {m for m in _IDENT.findall(text) if m not in _KEYWORDS}
    return names


def test_promql_metric_names_parses_what_the_files_use():
    expr = (
        'histogram_quantile(0.99, sum by (le, instance) (rate(a_bucket{path!~"/h|/r", '
        'le="+Inf"}[5m]))) > 1e3 and on (instance) b_total offset 5m / ignoring(x) '
        'max without (device_id) (c{x="and or d"}) unless count(e:rec[10m:1m]) '
        'or rate(f[$__rate_interval]) * ${g} + {__name__="h"} - sum(i) by (j)'
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c", "e:rec", "f", "h", "i"}
    assert promql_metric_names("up == 0") == {"up"}
    assert promql_metric_names("vector(1)") == set()


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    queries = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            queries.extend(t["expr"] for t in panel.get("targets", ()))
            walk(panel.get("panels", []))

    walk(board["panels"])
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
            assert match, f"template variable {var['name']}: unexpected query {query!r}"
            queries.append(match.group(1))
    return queries


def referenced_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used (alert names, 'dashboard')."""
    used: dict[str, set[str]] = {}
    for rule in rules():
        for name in promql_metric_names(rule["expr"]):
            used.setdefault(name, set()).add(rule["alert"])
    for expr in dashboard_queries():
        for name in promql_metric_names(expr):
            used.setdefault(name, set()).add("dashboard")
    return used


def exported_series_names(exposition: str) -> set[str]:
    """The series names a scrape of this text stores in Prometheus, from the TYPE lines
    (so a labelled counter with no samples yet still counts) and the sample lines.

    prometheus_client writes counters' TYPE with their ``_total`` name, histograms' and
    summaries' without the ``_bucket`` / ``_count`` / ``_sum`` of their samples.
    """
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            suffixes = {
                "histogram": ("_bucket", "_count", "_sum"),
                "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
                "summary": ("", "_count", "_sum"),
            }.get(kind, ("",))
            names.update(name + suffix for suffix in suffixes)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def test_exported_series_names_follow_the_exposition_format():
    text = (
        "# HELP a_total x\n# TYPE a_total counter\n"  # labelled counter, no child yet
        '# HELP h x\n# TYPE h histogram\nh_bucket{le="+Inf"} 0.0\nh_count 0.0\nh_sum 0.0\n'
        "# HELP s x\n# TYPE s summary\n"
        '# HELP g x\n# TYPE g gauge\ng{k="v"} 1.0\n'
    )
    assert exported_series_names(text) == {
        "a_total",
        "h_bucket",
        "h_count",
        "h_sum",
        "s",
        "s_count",
        "s_sum",
        "g",
    }


# --------------------------------------------------------------------- the edge's figures
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_edge_metrics_count_what_the_buffer_counts(make_client, clock, cloud, tmp_path):
    """Sent, dead-lettered, evicted and refused records on /metrics equal the buffer's own
    counts (SQLite is the source of truth; the scrape only reads it)."""
    from fastapi.testclient import TestClient  # here: importing it warns (httpx deprecation)

    def scrape(client: Any) -> dict[str, float]:
        text = (
            TestClient(create_edge_app(EdgeService(client, FakeDetector, "synthetic")))
            .get("/metrics")
            .text
        )
        return {
            s.name: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if not s.labels
        }

    client = make_client(capacity_bytes=64 * 1024)
    ids = [client.log_prediction(DET, image_id=f"a{i}") for i in range(3)]
    cloud.poison = {ids[1]}  # the cloud refuses this one record (422): dead-lettered
    drive(client, clock)
    for i in range(600):  # more than 64 KiB holds: the oldest pending records are evicted
        client.log_prediction({"detections": []}, image_id=f"b{i}")
    got, meta, counts = scrape(client), client.store.metadata(), client.store.counts()
    conn = client.store.read_connection()
    try:
        dropped = conn.execute(  # the audit rows and the older evictions summarised
            "SELECT (SELECT count(*) FROM dropped_records WHERE reason = 'capacity')"
            " + (SELECT coalesce(sum(records), 0) FROM dropped_summary WHERE reason = 'capacity')"
        ).fetchone()[0]
    finally:
        conn.close()
    assert got["edgebuf_records_buffered_total"] == meta["total_buffered"] == 603
    assert got["edgebuf_records_sent_total"] == meta["total_sent"] == 2  # rows since trimmed
    assert got["edgebuf_records_dead_lettered_total"] == counts["failed"] == 1
    assert got["edgebuf_records_evicted_total"] == meta["evicted_capacity"] == dropped > 0
    assert got["edgebuf_buffer_backlog"] == counts["pending"] + counts["sending"] == 600 - dropped
    assert got["edgebuf_buffer_live_bytes"] == meta["live_bytes"]
    assert got["edgebuf_buffer_capacity_bytes"] == 64 * 1024
    assert 0.9 < got["edgebuf_buffer_capacity_used_ratio"] <= 1.0
    assert 0 < got["edgebuf_disk_free_bytes"] <= got["edgebuf_disk_total_bytes"]
    assert got["edgebuf_last_success_timestamp_seconds"] > 0
    assert got["edgebuf_log_rejected_total"] == 0

    full = make_client(
        db_path=tmp_path / "reject.db", capacity_bytes=64 * 1024, overflow_policy="reject"
    )
    with pytest.raises(BufferFullError):
        while True:
            full.log_prediction(DET)
    assert scrape(full)["edgebuf_log_rejected_total"] == full.store.metadata()["rejected_full"] == 1


# --------------------------------------------------------------------- the rule files
def test_every_rule_is_an_alert_with_severity_summary_description_and_a_sane_for():
    found = rules()
    assert len(found) >= 10
    required = {
        "EdgebufBacklogGrowing",
        "EdgebufOldestPendingTooOld",
        "EdgebufCloudUnreachable",
        "EdgebufRecordsDeadLettered",
        "EdgebufRecordsEvicted",
        "EdgebufDiskHeadroomLow",
        "EdgebufBufferNearCapacity",
        "EdgebufCloudErrorRate",
        "EdgebufCloudIngestLatencyHigh",
        "EdgebufCloudDatabaseUnavailable",
        "EdgebufCloudSeqGapsPersist",
    }
    assert required <= {r.get("alert") for r in found}
    for rule in found:
        assert "alert" in rule, rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        # Counter increases fire at once; everything else must hold for a while.
        if "increase(" not in rule["expr"]:
            assert parse_duration(rule["for"]) >= 60, rule["alert"]


def test_promtool_check_rules_accepts_the_shipped_rules():
    result = run([tool("promtool"), "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES)


def test_promtool_check_config_accepts_the_example_config_and_its_rules():
    result = run([tool("promtool"), "check", "config", str(EXAMPLE_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    assert sorted(config["rule_files"]) == sorted(p.name for p in RULE_FILES)
    assert {job["job_name"] for job in config["scrape_configs"]} == {EDGE_JOB, CLOUD_JOB}


def test_promtool_unit_tests_pass():
    result = run([tool("promtool"), "test", "rules", *map(str, RULE_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_a_unit_test_that_sees_it_fire(tmp_path):
    """Disable one rule at a time (its expr never matches): its unit tests must fail.

    One folder per disabled rule (its rules file beside a copy of the unit tests that load
    it), all checked by one promtool run.
    """
    promtool = tool("promtool")
    mutants: list[tuple[str, list[str]]] = []
    for path in RULE_FILES:
        tests = [
            t
            for t in RULE_TESTS
            if f"../{path.name}" in yaml.safe_load(t.read_text())["rule_files"]
        ]
        assert tests, f"no unit test file loads {path.name}"
        doc = yaml.safe_load(path.read_text())
        for g, group in enumerate(doc["groups"]):
            for r, rule in enumerate(group["rules"]):
                folder = tmp_path / f"m{len(mutants)}"
                (folder / "tests").mkdir(parents=True)
                mutated = json.loads(json.dumps(doc))
                mutated["groups"][g]["rules"][r]["expr"] = "vector(1) == 0"
                (folder / path.name).write_text(yaml.safe_dump(mutated, sort_keys=False))
                copies = [str(shutil.copy(t, folder / "tests" / t.name)) for t in tests]
                mutants.append(
                    (f"{path.name}: {rule['alert']} ({rule['labels']['severity']})", copies)
                )
    result = run([promtool, "test", "rules", *(t for _, tests in mutants for t in tests)])
    passed = {
        section.split()[0]
        for section in result.stdout.split("Unit Testing:")[1:]
        if "SUCCESS" in section
    }
    undetected = [name for name, tests in mutants if all(t in passed for t in tests)]
    assert not undetected, f"disabled without any unit test failing: {undetected}"
    assert len(mutants) == len(rules())


def test_dashboard_panels_are_well_formed():
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "edge", "cloud"} <= variables
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = " | ".join(p["title"].lower() for p in board["panels"])
    for topic in (
        "backlog",
        "by status",
        "oldest pending",
        "cloud reachable",
        "sent",
        "dead-lettered",
        "evicted",
        "disk headroom",
        "capacity",
        "requests per second",
        "p50 / p99",
        "accepted and duplicate",
        "database unavailable",
        "gaps",
    ):
        assert topic in titles, topic
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
        for target in panel["targets"]:
            for var in re.findall(r"\$(\w+)", target["expr"]):
                assert var.startswith("__") or var in variables, (panel["title"], var)


# --------------------------------------------------------------------- real services
def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration ("1h30m", "10m", "2s", "500ms")."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * units[u] for n, u in parts)


def fast_duration(text: str) -> str:
    return f"{max(1000, round(parse_duration(text) * 1000 / SPEEDUP))}ms"


def fast_rules(doc: dict[str, Any]) -> dict[str, Any]:
    """The shipped rules with every ``for:`` and range window divided by SPEEDUP."""
    out = json.loads(json.dumps(doc))
    for group in out["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = fast_duration(rule["for"])
            rule["expr"] = re.sub(
                r"\[([^\]:]+)(:[^\]]*)?\]",
                lambda m: f"[{fast_duration(m.group(1))}{m.group(2) or ''}]",
                rule["expr"],
            )
    return out


def test_fast_rules_scale_for_and_windows():
    doc = {
        "groups": [
            {
                "name": "g",
                "rules": [
                    {"alert": "A", "expr": "deriv(x[10m]) > 0 and rate(y[1h]) > 1", "for": "15m"}
                ],
            }
        ]
    }
    rule = fast_rules(doc)["groups"][0]["rules"][0]
    assert rule["for"] == "7500ms"
    assert rule["expr"] == "deriv(x[5000ms]) > 0 and rate(y[30000ms]) > 1"


@dataclass
class Stack:
    cloud: CloudServer
    edge: subprocess.Popen[bytes]
    edge_url: str
    edge_log: Path


def wait_for(
    predicate: Callable[[], Any],
    what: str,
    timeout: float = 30.0,
    log: Callable[[], str] = lambda: "",
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{log()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A real cloud (SQLite) and a real ``edgebuf edge`` process logging synthetic frames
    with the fake detector, probing the cloud every 0.3 s."""
    tmp = tmp_path_factory.mktemp("alerting")
    cloud = CloudServer(f"sqlite:///{tmp}/cloud.db")
    cloud.start()
    port = free_port()
    env = {
        **os.environ,
        "BUFFER_DB_PATH": str(tmp / "edge" / "buffer.db"),
        "CLOUD_LOGGING_ENDPOINT": cloud.url,
        "DEVICE_ID": "cam-alerts",
        "EDGEBUF_BATCH_TIMEOUT": "0.2",
        "EDGEBUF_MONITOR_INTERVAL": "0.3",
        "EDGEBUF_REQUEST_TIMEOUT": "1",
        "EDGEBUF_HEALTH_TIMEOUT": "0.5",
        "EDGEBUF_MAX_RETRIES": "1",
        "EDGEBUF_BACKOFF_BASE": "0.05",
        "EDGEBUF_BACKOFF_CAP": "0.5",
    }
    log_path = tmp / "edge.log"
    cmd = [
        sys.executable,
        "-m",
        "edgebuf.ops.cli",
        "edge",
        "--source",
        "synthetic",
        "--detector",
        "fake",
        "--fps",
        "40",
        "--port",
        str(port),
        "--flush-timeout",
        "1",
        "--log-level",
        "warning",
    ]
    with open(log_path, "wb") as log:
        edge = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/ready").status_code == 200,
            "the edge's /ready",
            60,
            log_path.read_text,
        )
        wait_for(
            lambda: httpx.get(f"{url}/status").json()["counts"]["sent"] > 0,
            "a first delivery",
            30,
            log_path.read_text,
        )
        yield Stack(cloud, edge, url, log_path)
    finally:
        edge.kill()
        edge.wait(timeout=10)
        cloud.close()


def test_every_metric_in_the_rules_and_the_dashboard_is_exported(stack):
    stack.cloud.start()  # idempotent; another test may have killed it
    edge = exported_series_names(httpx.get(f"{stack.edge_url}/metrics").text)
    cloud = exported_series_names(httpx.get(f"{stack.cloud.url}/metrics").text)
    assert "edgebuf_buffer_records" in edge and "edgebuf_cloud_batch_seconds_bucket" in cloud
    used = referenced_metrics()
    assert len(used) >= 20
    missing = {
        name: sorted(where)
        for name, where in used.items()
        if name not in edge | cloud | PROMETHEUS_MADE
    }
    assert not missing, f"named in deploy/ but exported by neither service: {missing}"


def alerts(base: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base}/api/v1/alerts", timeout=5).json()
    assert answer["status"] == "success"
    return answer["data"]["alerts"]


def firing(base: str, name: str, instance: str) -> bool:
    return any(
        a["labels"]["alertname"] == name
        and a["state"] == "firing"
        and a["labels"].get("instance") == instance
        for a in alerts(base)
    )


def test_a_real_prometheus_fires_cloud_unreachable_and_backlog_on_an_outage(stack, tmp_path):
    prometheus = tool("prometheus")
    stack.cloud.start()
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for path in RULE_FILES:
        fast = fast_rules(yaml.safe_load(path.read_text()))
        (rules_dir / path.name).write_text(yaml.safe_dump(fast, sort_keys=False))
    edge_target = stack.edge_url.removeprefix("http://")
    cloud_target = stack.cloud.url.removeprefix("http://")
    # The shipped example with these targets, a 1 s clock and the scaled rules.
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    config["rule_files"] = [str(rules_dir / name) for name in config["rule_files"]]
    targets = {EDGE_JOB: edge_target, CLOUD_JOB: cloud_target}
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )

    def prom_log() -> str:
        return (
            log_path.read_text(errors="replace")[-3000:]
            + "\n"
            + stack.edge_log.read_text(errors="replace")[-2000:]
        )

    try:
        wait_for(
            lambda: httpx.get(f"{base}/-/ready").status_code == 200,
            "Prometheus ready",
            30,
            prom_log,
        )

        def both_up() -> bool:
            answer = httpx.get(f"{base}/api/v1/query", params={"query": "up"}).json()
            return sorted(r["value"][1] for r in answer["data"]["result"]) == ["1", "1"]

        wait_for(both_up, "both targets scraped", 30, prom_log)

        def evaluated() -> bool:
            groups = httpx.get(f"{base}/api/v1/rules").json()["data"]["groups"]
            found = [r for g in groups for r in g["rules"]]
            return len(found) == len(rules()) and all(
                r["health"] == "ok" and r["lastEvaluation"] > "2000" for r in found
            )

        wait_for(evaluated, "every rule evaluated without error", 30, prom_log)
        # With the cloud up, neither alert is even pending.
        states = {(a["labels"]["alertname"], a["state"]) for a in alerts(base)}
        assert not {name for name, _ in states} & {
            "EdgebufCloudUnreachable",
            "EdgebufBacklogGrowing",
        }, states

        stack.cloud.kill()  # SIGKILL: a crash, no goodbye
        killed_at = time.monotonic()
        wait_for(
            lambda: firing(base, "EdgebufCloudUnreachable", edge_target),
            "EdgebufCloudUnreachable firing",
            30,
            prom_log,
        )
        wait_for(
            lambda: firing(base, "EdgebufBacklogGrowing", edge_target),
            "EdgebufBacklogGrowing firing",
            40,
            prom_log,
        )
        took = time.monotonic() - killed_at
        assert firing(base, "EdgebufCloudDown", cloud_target)
        status = httpx.get(f"{stack.edge_url}/status").json()
        assert status["connectivity"]["state"] == "down" and status["backlog"] > 100
        print(f"alerts firing {took:.1f} s after the SIGKILL")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
