"""The detector seam of the edge service: anything that turns a frame into a record.

``Detector`` is the protocol the service calls; ``UltralyticsDetector`` is the real one
(a YOLO ``.pt`` or an ONNX export through ultralytics' own ONNX backend), and
``FakeDetector`` answers instantly with fixed detections, for tests and dry runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Detector(Protocol):
    """Turns one frame (an H x W x 3 BGR uint8 array) into one prediction record."""

    model_name: str
    model_version: str

    def detect(self, frame: Any) -> dict[str, Any]:
        """Return the prediction dict for ``frame`` (see ``edgebuf.vision.results``)."""
        ...


class UltralyticsDetector:
    """YOLO through ultralytics, on the CPU unless ``device`` says otherwise.

    Loading reads the weights once (``model_version`` is their content hash) and runs one
    warm-up inference, so the first real frame is not charged for lazy initialisation.
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        imgsz: int = 320,
        conf: float = 0.25,
        device: str | None = None,
    ) -> None:
        from edgebuf.vision.model import load_yolo, model_version

        self.weights = Path(weights)
        self.model = load_yolo(self.weights)
        self.model_name = self.weights.stem
        self.model_version = model_version(self.weights)
        self.imgsz, self.conf, self.device = imgsz, conf, device
        import numpy as np

        self.detect(np.zeros((imgsz, imgsz, 3), dtype=np.uint8))  # warm-up

    @property
    def names(self) -> dict[int, str]:
        return dict(self.model.names)

    def detect(self, frame: Any) -> dict[str, Any]:
        from edgebuf.vision.results import results_to_record

        result = self.model.predict(
            frame, imgsz=self.imgsz, conf=self.conf, device=self.device, verbose=False
        )[0]
        return results_to_record(result, model_name=self.model_name)


class FakeDetector:
    """A stand-in with fixed output and an optional delay, for tests and dry runs."""

    def __init__(
        self,
        detections: list[dict[str, Any]] | None = None,
        *,
        delay_s: float = 0.0,
        model_name: str = "fake",
        model_version: str = "fake@0",
        fail_every: int = 0,
    ) -> None:
        self.detections = (
            detections
            if detections is not None
            else [
                {
                    "class_id": 0,
                    "class_name": "part",
                    "confidence": 0.9,
                    "box": [10.0, 10.0, 50.0, 50.0],
                    "box_norm": [0.03, 0.03, 0.16, 0.16],
                }
            ]
        )
        self.delay_s = delay_s
        self.model_name, self.model_version = model_name, model_version
        self.fail_every = fail_every
        self.calls = 0

    def detect(self, frame: Any) -> dict[str, Any]:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError(f"fake inference failure on call {self.calls}")
        if self.delay_s:
            time.sleep(self.delay_s)
        height, width = frame.shape[:2]
        return {
            "task": "detect",
            "model": self.model_name,
            "image": {"width": int(width), "height": int(height)},
            "detections": list(self.detections),
            "speed_ms": {},
        }


def load_detector(spec: str, weights: str | Path | None, **options: Any) -> Detector:
    """``ultralytics`` (default) or ``fake``, or ``module:callable`` called with the
    weights path and options, for detectors of your own."""
    if spec == "ultralytics":
        if weights is None:
            raise ValueError("the ultralytics detector needs --model PATH")
        return UltralyticsDetector(weights, **options)
    if spec == "fake":
        return FakeDetector()
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(
            f"detector must be 'ultralytics', 'fake' or 'module:callable', got {spec!r}"
        )
    import importlib

    factory = getattr(importlib.import_module(module), attr)
    return factory(weights, **options)
