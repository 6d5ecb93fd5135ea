"""Inference next to logging: what the detector costs a frame, and what the buffer adds.

    python bench/inference.py [--frames 200] [--warmup 10]

On held-out synthetic conveyor frames (seed 1000, 320 px), the shipped detector
(``data/conveyor_yolov8n.pt``) and its ONNX export (``edgebuf export-onnx``, run by
onnxruntime through ultralytics) each turn every frame into a prediction record
(``UltralyticsDetector.detect``: predict plus the record conversion), and a client that
is not started (no threads, no network: the logging call alone) commits each record
with ``log_prediction``. Both are timed per call with perf_counter_ns.

Reported: ms per frame (p50, p99) for each model, µs per ``log_prediction`` of the real
records, and logging as a share of inference. Target: logging under 2% of inference (the
buffer must cost nothing an operator would notice next to the model). The ONNX row is
skipped when onnxruntime is not installed (the ``onnx`` extra).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import benchlib as bl
import numpy as np

from cloud.testing import free_port
from edgebuf import EnhancedAsyncLoggingClient
from edgebuf.vision.model import DEFAULT_WEIGHTS, export_onnx
from edgebuf.vision.synthetic import render_frame

ROOT = Path(__file__).resolve().parent.parent


def frames(n: int) -> list[np.ndarray]:
    return [
        np.ascontiguousarray(np.asarray(render_frame(1000, i)[0])[:, :, ::-1]) for i in range(n)
    ]


def time_detector(
    weights: Path, images: list[np.ndarray], warmup: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from edgebuf.vision.detector import UltralyticsDetector

    detector = UltralyticsDetector(weights)
    for img in images[:warmup]:
        detector.detect(img)
    samples, records = [], []
    for img in images:
        t0 = time.perf_counter_ns()
        records.append(detector.detect(img))
        samples.append(time.perf_counter_ns() - t0)
    return bl.latency_summary(samples), records


def time_logging(
    records: list[dict[str, Any]], tmp: Path, warmup: int, model_version: str
) -> dict[str, Any]:
    client = EnhancedAsyncLoggingClient(
        f"http://127.0.0.1:{free_port()}", tmp / "edge.db", "bench-inference"
    )
    try:
        for rec in records[:warmup]:
            client.log_prediction(rec, image_id="warmup", model_version=model_version)
        samples = []
        for i, rec in enumerate(records):
            t0 = time.perf_counter_ns()
            client.log_prediction(rec, image_id=f"frame-{i:06d}", model_version=model_version)
            samples.append(time.perf_counter_ns() - t0)
        return bl.latency_summary(samples)
    finally:
        client.close(timeout=0)


def main() -> None:
    p = bl.parser(__doc__)
    p.add_argument("--frames", type=int, default=200, help="timed frames per model")
    p.add_argument("--warmup", type=int, default=10, help="untimed frames first")
    p.add_argument("--weights", type=Path, default=ROOT / DEFAULT_WEIGHTS)
    args = p.parse_args()
    if args.smoke:
        args.frames, args.warmup = 8, 2
    images = frames(args.frames)

    table = bl.Table(
        f"detector vs logging — {args.frames} held-out 320 px frames, one process",
        ["case", "p50", "p99", "unit", "% of .pt inference (p50)"],
    )
    results: dict[str, Any] = {"frames": args.frames}
    targets = bl.Table(
        "targets", ["target", "logging µs", "inference µs", "share", "wanted", "result"]
    )
    with bl.scratch_dir() as tmp:
        bl.note("[inference] .pt")
        pt, records = time_detector(args.weights, images, args.warmup)
        models = {".pt (torch)": pt}
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            bl.note("[inference] onnxruntime missing: ONNX row skipped (pip install -e '.[onnx]')")
        else:
            bl.note("[inference] exporting and timing .onnx")
            onnx_path = export_onnx(args.weights, tmp / "conveyor.onnx")
            models[".onnx (onnxruntime)"], _ = time_detector(onnx_path, images, args.warmup)
        bl.note("[inference] log_prediction of the real records")
        logging = time_logging(records, tmp, args.warmup, "conveyor_yolov8n")
    for name, r in models.items():
        table.add(
            f"detect, {name}",
            r["p50_us"] / 1000,
            r["p99_us"] / 1000,
            "ms",
            100 * r["p50_us"] / pt["p50_us"],
        )
    table.add(
        "log_prediction (durability normal)",
        logging["p50_us"],
        logging["p99_us"],
        "µs",
        100 * logging["p50_us"] / pt["p50_us"],
    )
    share = bl.ratio(logging["p50_us"], pt["p50_us"])
    targets.add(
        "log_prediction p50 vs .pt inference p50",
        logging["p50_us"],
        pt["p50_us"],
        f"{100 * share:.2f}%",
        "≤ 2%",
        bl.verdict(share is not None and share <= 0.02),
    )
    results.update(
        models=models,
        logging=logging,
        targets=[
            {
                "target": "logging share of inference",
                "ratio": share,
                "pass": share is not None and share <= 0.02,
            }
        ],
    )
    bl.report("inference", [table, targets], results, args.json)


if __name__ == "__main__":
    main()
