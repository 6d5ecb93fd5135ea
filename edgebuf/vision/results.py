"""Turn an ultralytics ``Results`` object into one prediction record.

The record is plain JSON (lists, floats, strings), the shape the cloud's per-class counts
read (``detections[*].class_name``)::

    {"task": "detect", "model": "conveyor_yolov8n",
     "image": {"width": 320, "height": 320, "source": "frame-000123.png"},
     "detections": [{"class_id": 1, "class_name": "defect", "confidence": 0.91,
                     "box": [x0, y0, x1, y1], "box_norm": [x0/w, y0/h, x1/w, y1/h]}],
     "speed_ms": {"preprocess": 0.4, "inference": 21.3, "postprocess": 0.6}}

Boxes are corners in pixels of the original image and the same corners divided by its
width and height. Numbers are rounded (pixels to 0.01, confidences and normalised
coordinates to 1e-4) so records stay small and stable across runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _names(result: Any) -> Mapping[int, str]:
    names = getattr(result, "names", None) or {}
    return names if isinstance(names, Mapping) else dict(enumerate(names))


def results_to_record(
    result: Any, *, model_name: str | None = None, source: str | None = None
) -> dict[str, Any]:
    """One ``Results`` (one image) as a JSON-ready prediction dict.

    ``model_name`` is recorded as ``model``; ``source`` (default: the result's ``path``
    when it names a file) as ``image.source``.
    """
    height, width = (int(v) for v in result.orig_shape[:2])
    names = _names(result)
    detections: list[dict[str, Any]] = []
    boxes = getattr(result, "boxes", None)
    if boxes is not None and len(boxes):
        xyxy = boxes.xyxy.cpu().tolist()
        conf = boxes.conf.cpu().tolist()
        cls = boxes.cls.cpu().tolist()
        for (x0, y0, x1, y1), c, k in zip(xyxy, conf, cls):
            k = int(k)
            detections.append(
                {
                    "class_id": k,
                    "class_name": str(names.get(k, k)),
                    "confidence": round(float(c), 4),
                    "box": [round(float(v), 2) for v in (x0, y0, x1, y1)],
                    "box_norm": [
                        round(x0 / width, 4),
                        round(y0 / height, 4),
                        round(x1 / width, 4),
                        round(y1 / height, 4),
                    ],
                }
            )
    if source is None:
        path = getattr(result, "path", None)
        source = Path(path).name if path and not str(path).startswith("image") else None
    image: dict[str, Any] = {"width": width, "height": height}
    if source:
        image["source"] = source
    speed = getattr(result, "speed", None) or {}
    return {
        "task": "detect",
        "model": model_name,
        "image": image,
        "detections": detections,
        "speed_ms": {k: round(float(v), 3) for k, v in speed.items() if v is not None},
    }
