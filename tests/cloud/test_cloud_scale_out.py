"""Real `python -m cloud` processes: two replicas on one PostgreSQL, kill and restart.

Both start at the same moment (so both race to run the migration), then take overlapping
batches concurrently from client threads, spread across both replicas. Every record must
be stored exactly once, and `/stats` must agree whichever replica answers.
"""

from __future__ import annotations

import random
import threading

import httpx
import pytest

from cloud.testing import CloudServer, wait_ready

DEVICES = ("edge-1", "edge-2")
PER_DEVICE = 256
BATCH = 32


@pytest.mark.postgres
def test_two_replicas_store_each_record_once(pg_database_factory, helpers):
    url = pg_database_factory()
    replicas = [CloudServer(url), CloudServer(url)]
    try:
        for replica in replicas:  # both launched before either is waited on
            replica.start(wait=False)
        for replica in replicas:
            wait_ready(replica.url, timeout=60, process=replica.process)

        rng = random.Random(5)
        jobs = [
            (device, list(range(start, start + BATCH)))
            for device in DEVICES
            for start in range(1, PER_DEVICE + 1, BATCH)
        ]
        jobs += [
            (device, rng.sample(range(1, PER_DEVICE + 1), BATCH))
            for device in DEVICES
            for _ in range(8)
        ]
        jobs *= 2  # every batch sent twice: a retry, possibly to the other replica
        rng.shuffle(jobs)
        threads_n = 8
        barrier = threading.Barrier(threads_n)
        results: list[tuple[int, dict]] = []
        lock = threading.Lock()

        def worker(index: int) -> None:
            with httpx.Client(timeout=30) as client:
                barrier.wait()
                for number, (device, seqs) in enumerate(jobs[index::threads_n]):
                    base = replicas[(index + number) % 2].url
                    body = helpers.batch(
                        device,
                        [helpers.record(f"{device}-{seq}", seq, classes=("part",)) for seq in seqs],
                    )
                    answer = client.post(f"{base}/log", json=body)
                    with lock:
                        results.append((answer.status_code, answer.json()))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

        total = len(DEVICES) * PER_DEVICE
        assert len(results) == len(jobs)
        assert {status for status, _ in results} == {200}
        assert sum(body["accepted"] for _, body in results) == total

        stats = [httpx.get(f"{replica.url}/stats").json() for replica in replicas]
        assert stats[0] == stats[1]
        assert stats[0]["total_records"] == total
        assert stats[0]["detections_per_class"] == {"part": total}
        assert [(d["device_id"], d["count"], d["missing_seqs"]) for d in stats[0]["devices"]] == [
            (device, PER_DEVICE, 0) for device in DEVICES
        ]
        for replica in replicas:
            gaps = httpx.get(f"{replica.url}/devices/edge-1/gaps").json()
            assert (gaps["count"], gaps["missing"], gaps["gaps"]) == (PER_DEVICE, 0, [])
    finally:
        for replica in replicas:
            replica.close()
        for replica in replicas:
            assert replica.process is None or replica.process.poll() is not None


def test_run_cloud_server_helper_gives_url_and_process(tmp_path, helpers):
    from cloud.testing import run_cloud_server

    with run_cloud_server(f"sqlite:///{tmp_path}/h.db", with_process=True) as (base, proc):
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        body = helpers.batch("cam-1", [helpers.record("r1")])
        assert httpx.post(f"{base}/log", json=body).json()["accepted"] == 1
        assert proc.poll() is None
    assert proc.poll() is not None


def test_server_killed_and_restarted_keeps_its_records(tmp_path, helpers):
    server = CloudServer(f"sqlite:///{tmp_path}/k.db")
    try:
        server.start()
        body = helpers.batch("cam-1", helpers.seq_records(1, 10))
        assert httpx.post(f"{server.url}/log", json=body).json()["accepted"] == 10
        server.kill()  # SIGKILL: no graceful shutdown
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/health", timeout=2)
        server.start()  # same port
        again = httpx.post(f"{server.url}/log", json=body).json()
        assert (again["accepted"], again["duplicates"]) == (0, 10)
        server.pause()
        with pytest.raises(httpx.TimeoutException):
            httpx.get(f"{server.url}/health", timeout=0.5)
        server.resume()
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    finally:
        server.close()


@pytest.mark.postgres
def test_steady_load_reuses_pooled_connections(pg_database_factory, helpers):
    """16 devices posting at once must not fork a PostgreSQL backend per request: the pool
    keeps what it opened (overflow connections, closed on return, once did exactly that)."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = pg_database_factory()
    database = make_url(url).database
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def backends() -> set[int]:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            return {
                pid
                for (pid,) in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                    " AND application_name = 'edgebuf-cloud'",
                    (database,),
                )
            }

    def wave(server: CloudServer, tag: str) -> None:
        def device(d: int) -> None:
            with httpx.Client(timeout=30) as client:
                for b in range(6):
                    seqs = range(b * BATCH + 1, (b + 1) * BATCH + 1)
                    body = helpers.batch(
                        f"{tag}-{d}", [helpers.record(f"{tag}-{d}-{s}", s) for s in seqs]
                    )
                    assert client.post(f"{server.url}/log", json=body).status_code == 200

        threads = [threading.Thread(target=device, args=(d,)) for d in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)

    with CloudServer(url) as server:
        wave(server, "warm")
        seen = [backends()]
        for n in range(3):
            wave(server, f"steady{n}")
            seen.append(backends())
    assert seen[0] and all(len(s) <= 20 for s in seen)
    for earlier, later in zip(seen, seen[1:]):  # the pool may grow to 20; it never closes one
        assert earlier <= later, f"backends closed under steady load: {sorted(earlier - later)}"
