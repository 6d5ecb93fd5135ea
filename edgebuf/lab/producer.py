"""A simulated camera process: logs predictions and prints each returned record id.

Used by crash drills and tests, which SIGKILL it at random moments and restart it on the
same buffer: a record id printed here is a record whose ``log_prediction`` returned, so it
must reach the cloud exactly once.

    python -m edgebuf.lab.producer --db B.db --endpoint URL --device cam-1 --count 500 --fps 200
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time

from edgebuf.client import EnhancedAsyncLoggingClient


def command(
    db: str | os.PathLike[str],
    endpoint: str,
    device: str,
    *,
    count: int = 1000,
    start_frame: int = 0,
    fps: float = 0.0,
    seed: int = 0,
    flush: float = 0.0,
    batch_timeout: float = 0.2,
    monitor_interval: float = 0.5,
    reconcile_interval: float | None = None,
) -> list[str]:
    """The argv that runs this producer as a real process (drills and tests kill it)."""
    return [
        sys.executable, "-m", "edgebuf.lab.producer", "--db", str(db), "--endpoint", endpoint,
        "--device", device, "--count", str(count), "--start-frame", str(start_frame),
        "--fps", str(fps), "--seed", str(seed), "--flush", str(flush),
        "--batch-timeout", str(batch_timeout), "--monitor-interval", str(monitor_interval),
    ] + ([] if reconcile_interval is None else ["--reconcile-interval", str(reconcile_interval)])  # fmt: skip


def fake_prediction(rng: random.Random, frame: int) -> dict:
    """A YOLO-shaped prediction: some frames empty, some with parts and defects."""
    n = rng.choice([0, 0, 1, 1, 2, 3])
    return {
        "frame": frame,
        "detections": [
            {
                "class_name": rng.choice(["part", "part", "scratch", "dent"]),
                "confidence": round(rng.uniform(0.3, 0.99), 3),
                "box": [round(rng.uniform(0, 320), 1) for _ in range(4)],
            }
            for _ in range(n)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--device", default="cam-1")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--start-frame", type=int, default=0)
    p.add_argument("--fps", type=float, default=0.0, help="0 = as fast as possible")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-timeout", type=float, default=0.2)
    p.add_argument("--monitor-interval", type=float, default=0.5)
    p.add_argument("--flush", type=float, default=0.0, help="flush for up to N s at the end")
    p.add_argument("--reconcile-interval", type=float, default=None)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    client = EnhancedAsyncLoggingClient(
        args.endpoint,
        args.db,
        args.device,
        batch_timeout=args.batch_timeout,
        monitor_interval=args.monitor_interval,
        max_retries=2,
        backoff_base=0.05,
        backoff_cap=0.5,
        request_timeout=5.0,
        health_timeout=1.0,
        reconcile_interval=args.reconcile_interval,
    )
    # SIGTERM (docker stop, systemd, Kubernetes) -> leave the with-block: close() makes one
    # bounded attempt to deliver, and whatever is not acknowledged stays pending on disk.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    out = sys.stdout
    with client:
        for frame in range(args.start_frame, args.start_frame + args.count):
            rid = client.log_prediction(
                fake_prediction(rng, frame), image_id=f"frame-{frame:07d}", model_version="sim-1"
            )
            out.write(f"{rid}\n")
            out.flush()
            if args.fps:
                time.sleep(1.0 / args.fps)
        if args.flush:
            ok = client.flush(timeout=args.flush)
            print(f"FLUSHED {ok}", file=sys.stderr)
            return 0 if ok else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
