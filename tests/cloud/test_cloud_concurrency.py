"""Many threads posting overlapping batches at once: every record is stored exactly once.

This is the at-least-once edge in miniature: retries and overlaps arrive concurrently, so
two transactions race to insert the same (device_id, record_id). The atomic
insert-or-ignore must let exactly one win, the `accepted` counts must add up to the
number of distinct records, and (on PostgreSQL) overlapping batches must not deadlock.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

DEVICES = ("cam-a", "cam-b", "cam-c")
PER_DEVICE = 320
THREADS = 12
BATCHES_PER_THREAD = 12
BATCH = 32


def plan(seed: int) -> list[list[tuple[str, list[int]]]]:
    """Per thread, a list of (device, seqs): full coverage plus random overlapping windows."""
    rng = random.Random(seed)
    jobs = [
        (device, list(range(start, start + BATCH)))
        for device in DEVICES
        for start in range(1, PER_DEVICE + 1, BATCH)
    ]
    while len(jobs) < THREADS * BATCHES_PER_THREAD:
        device = rng.choice(DEVICES)
        start = rng.randint(1, PER_DEVICE - BATCH + 1)
        seqs = list(range(start, start + BATCH))
        seqs[rng.randrange(BATCH)] = seqs[0]  # an in-batch repeat now and then
        jobs.append((device, seqs))
    rng.shuffle(jobs)
    for _, seqs in jobs:
        rng.shuffle(seqs)
    return [jobs[i::THREADS] for i in range(THREADS)]


def test_concurrent_overlapping_batches_store_each_record_once(api, helpers):
    per_thread = plan(seed=11)
    barrier = threading.Barrier(THREADS)
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def worker(jobs) -> None:
        barrier.wait()
        for device, seqs in jobs:
            records = [
                helpers.record(f"{device}-{seq}", seq, classes=("part", "defect")) for seq in seqs
            ]
            answer = api.post("/log", json=helpers.batch(device, records))
            with lock:
                answers.append((answer.status_code, answer.json(), len(seqs)))

    threads = [threading.Thread(target=worker, args=(jobs,)) for jobs in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert Counter(status for status, _, _ in answers) == {200: THREADS * BATCHES_PER_THREAD}
    total = len(DEVICES) * PER_DEVICE
    assert sum(body["accepted"] for _, body, _ in answers) == total
    assert all(body["accepted"] + body["duplicates"] == sent for _, body, sent in answers)

    stats = api.get("/stats").json()
    assert stats["total_records"] == total
    assert [(d["device_id"], d["count"], d["missing_seqs"]) for d in stats["devices"]] == [
        (device, PER_DEVICE, 0) for device in DEVICES
    ]
    assert stats["detections_per_class"] == {"part": total, "defect": total}
    page = api.get("/predictions", params={"limit": 10_000}).json()
    keys = [(item["device_id"], item["record_id"]) for item in page["items"]]
    assert len(keys) == len(set(keys)) == total
