"""Exactly-once across day partitions and two replicas, through a proxy that drops acks.

Two real `python -m cloud` replicas start together on one PostgreSQL (both race to
migrate and to run the start-up maintenance, which creates the day partitions; one wins
each lock). Client threads send records spread over four days and a few wild timestamps
(the default partition), every batch at least twice and alternating replicas; one replica
sits behind `FaultProxy`, which for stretches forwards a batch (the cloud commits) and
then drops the acknowledgement, so the client retries what is already stored. Every
record must be stored exactly once, in the partition of its day, with rollups, seq state
and `/stats` exact on both replicas.
"""

from __future__ import annotations

import random
import threading
import time

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from cloud.maintenance import partition_name
from cloud.retention import DAY
from cloud.testing import CloudServer, wait_ready
from edgebuf.lab.faults import FaultProxy

DEVICES = ("edge-1", "edge-2", "edge-3")
PER_DEVICE = 240
BATCH = 24


@pytest.mark.postgres
def test_two_replicas_partitions_and_dropped_acks_store_each_record_once(
    pg_database_factory, helpers
):
    from tests.cloud.test_cloud_rollups import brute_stats

    url = pg_database_factory()
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    today = int(time.time() // DAY)
    rng = random.Random(11)
    stamps = {
        (device, seq): (today - 1 + rng.randrange(4)) * DAY + rng.uniform(0, DAY)
        for device in DEVICES
        for seq in range(1, PER_DEVICE + 1)
    }
    for device in DEVICES:  # wild timestamps: stored in the default partition
        stamps[(device, 1)] = 2.0**45
        stamps[(device, 2)] = -5.0
    replicas = [CloudServer(url), CloudServer(url)]
    proxy = None
    try:
        for replica in replicas:
            replica.start(wait=False)
        for replica in replicas:
            wait_ready(replica.url, timeout=60, process=replica.process)
        proxy = FaultProxy(replicas[0].url)
        targets = [proxy.url, replicas[1].url]

        jobs = [
            (device, list(range(start, start + BATCH)))
            for device in DEVICES
            for start in range(1, PER_DEVICE + 1, BATCH)
        ]
        jobs += [
            (device, rng.sample(range(1, PER_DEVICE + 1), BATCH))
            for device in DEVICES
            for _ in range(6)
        ]
        jobs *= 2
        rng.shuffle(jobs)
        threads_n = 6
        accepted: list[int] = []
        retried: list[int] = []
        lock = threading.Lock()

        def worker(index: int) -> None:
            with httpx.Client(timeout=30) as client:
                for number, (device, seqs) in enumerate(jobs[index::threads_n]):
                    body = helpers.batch(
                        device,
                        [
                            helpers.record(f"{device}-{seq}", seq, timestamp=stamps[(device, seq)])
                            for seq in seqs
                        ],
                    )
                    for attempt in range(20):
                        target = targets[(index + number + attempt) % 2]
                        try:
                            answer = client.post(f"{target}/log", json=body)
                        except httpx.TransportError:
                            with lock:
                                retried.append(1)
                            continue  # the ack was dropped: retry, maybe on the other one
                        assert answer.status_code == 200, answer.text
                        with lock:
                            accepted.append(answer.json()["accepted"])
                        break
                    else:
                        raise AssertionError("batch never acknowledged")

        def faults() -> None:
            for _ in range(6):
                proxy.fail_next(4, "drop_ack")
                time.sleep(0.3)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
        chaos = threading.Thread(target=faults)
        for thread in [*threads, chaos]:
            thread.start()
        for thread in [*threads, chaos]:
            thread.join(timeout=180)
        total = len(DEVICES) * PER_DEVICE

        with psycopg.connect(conninfo) as conn:
            twice = conn.execute(
                "SELECT count(*) FROM (SELECT device_id, record_id FROM predictions"
                " GROUP BY 1, 2 HAVING count(*) > 1) AS d"
            ).fetchone()[0]
            stored = conn.execute("SELECT count(*) FROM predictions").fetchone()[0]
            placed = dict(
                conn.execute(
                    "SELECT tableoid::regclass::text, count(*) FROM predictions GROUP BY 1"
                ).fetchall()
            )
            rows = [
                dict(
                    zip(
                        (
                            "device_id",
                            "record_id",
                            "seq",
                            "ts",
                            "model_version",
                            "prediction",
                            "received_at",
                        ),
                        row,
                    )
                )
                for row in conn.execute(
                    "SELECT device_id, record_id, seq, ts, model_version, prediction,"
                    " received_at FROM predictions"
                ).fetchall()
            ]
        assert (twice, stored) == (0, total)
        # accepted counts what each answer stored; answers whose ack was dropped are lost
        assert sum(accepted) <= total
        assert placed.pop("predictions_default") == 2 * len(DEVICES)
        expected = {}
        for (_device, seq), ts in stamps.items():
            if seq > 2:
                name = partition_name(int(ts // DAY))
                expected[name] = expected.get(name, 0) + 1
        assert placed == expected and len(placed) == 4
        stats = [httpx.get(f"{replica.url}/stats").json() for replica in replicas]
        assert stats[0] == stats[1] == brute_stats(rows)
        for replica in replicas:
            for device in DEVICES:
                mark = httpx.get(f"{replica.url}/devices/{device}/watermark").json()
                assert (mark["contiguous_through"], mark["count"], mark["missing"]) == (
                    PER_DEVICE,
                    PER_DEVICE,
                    [],
                )
        # the proxy did drop acknowledgements, so the re-send path ran (how many depends on
        # how far the workers got while the drops were armed: 8-24 seen)
        assert len(retried) >= 1
    finally:
        if proxy is not None:
            proxy.close()
        for replica in replicas:
            replica.close()
