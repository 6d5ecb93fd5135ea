"""Log every ``predict`` call of an ultralytics model through an edgebuf client.

    model = YOLO("data/conveyor_yolov8n.pt")
    detach = attach(model, client)      # one line; every result of every predict is logged
    model.predict(frames)               # each image -> one committed record
    detach()

The hook is ultralytics' ``on_predict_batch_end`` callback, which runs after each batch's
post-processing with ``predictor.results`` filled in. The record is committed to the local
SQLite buffer inside the callback, so when ``predict`` returns (or a ``stream=True``
generator yields a result) that prediction is already durable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgebuf.vision.results import results_to_record

EVENT = "on_predict_batch_end"


def _model_identity(model: Any) -> tuple[str, str | None]:
    ckpt = getattr(model, "ckpt_path", None) or getattr(model, "model_name", None)
    if ckpt and Path(str(ckpt)).is_file():
        from edgebuf.vision.model import model_version

        return Path(str(ckpt)).stem, model_version(ckpt)
    name = Path(str(ckpt)).stem if ckpt else type(model).__name__
    return name, None


def attach(
    model: Any,
    client: Any,
    *,
    model_version: str | None = None,
    image_id: Callable[[Any], str | None] | None = None,
) -> Callable[[], None]:
    """Register a callback on ``model`` that logs each result; return a function that
    removes it again.

    ``model_version`` defaults to ``<weights stem>@<sha256 prefix>`` of the loaded weights
    file. ``image_id(result)`` names each record (default: the source file name, or none
    for in-memory images). Errors from the client (a full buffer, a closed client) raise
    out of ``predict``: a prediction that could not be recorded is not silently dropped.
    """
    name, version = _model_identity(model)
    version = model_version or version

    def log_batch(predictor: Any) -> None:
        for result in predictor.results or ():
            record = results_to_record(result, model_name=name)
            rid = image_id(result) if image_id is not None else record["image"].get("source")
            client.log_prediction(record, image_id=rid, model_version=version)

    model.add_callback(EVENT, log_batch)

    def detach() -> None:
        callbacks = model.callbacks.get(EVENT, [])
        if log_batch in callbacks:
            callbacks.remove(log_batch)

    return detach
