"""The hot path: store one validated batch exactly once, in one transaction.

Exactly-once storage under at-least-once delivery rests on one statement: an atomic
`INSERT … ON CONFLICT (device_id, record_id) DO NOTHING … RETURNING id, record_id`
(see `cloud.statements` for how each dialect receives the rows).
The database, not Python, decides what is new, so two replicas (or two threads) storing
overlapping batches at the same moment can never both store a record; there is no
read-then-write window. RETURNING lists exactly the rows this transaction inserted,
which gives the `accepted` count and the primary keys the detection counts hang off.

Rows are inserted in record_id order so concurrent transactions on PostgreSQL take their
unique-index locks in the same order and cannot deadlock on overlapping batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from pydantic_core import PydanticSerializationError, to_json

from cloud.db import Database
from cloud.errors import translate_db_errors
from cloud.models import LogBatch
from cloud.statements import writer_for

__all__ = ["MAX_CLASS_NAME", "BatchStore", "StoreResult", "count_classes"]

MAX_CLASS_NAME = 256
_CLASS_KEYS = ("class_name", "class", "name")


def count_classes(prediction: dict[str, Any]) -> dict[str, int]:
    """Count `prediction["detections"][*]` per class (`class_name`, else `class`/`name`).

    Integer class ids count under their decimal string. Anything unrecognisable is
    skipped: the record is still stored verbatim, it just adds nothing to the tally.
    """
    detections = prediction.get("detections")
    if not isinstance(detections, list):
        return {}
    counts: dict[str, int] = {}
    for detection in detections:
        if not isinstance(detection, dict):
            continue
        name: Any = None
        for key in _CLASS_KEYS:
            name = detection.get(key)
            if name is not None:
                break
        if isinstance(name, bool) or not isinstance(name, (str, int)):
            continue
        label = str(name).replace("\x00", "")[:MAX_CLASS_NAME]
        counts[label] = counts.get(label, 0) + 1
    return counts


@dataclass(frozen=True)
class StoreResult:
    """Outcome of storing one batch."""

    accepted: int
    duplicates: int


def _serialize(index: int, prediction: dict[str, Any]) -> str:
    # pydantic-core's encoder is ~3x faster than json.dumps and this runs per record.
    # NaN/Infinity cannot reach here: the /log route rejects them as malformed JSON.
    try:
        return to_json(prediction).decode()
    except (PydanticSerializationError, ValueError, RecursionError) as error:
        raise HTTPException(
            422,
            [{
                "loc": ["body", "records", index, "prediction"],
                "msg": f"prediction is not storable as JSON: {error}",
                "type": "value_error",
            }],
        ) from None


class BatchStore:
    """Insert batches into one database."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._writer = writer_for(db.dialect)

    def store(self, batch: LogBatch, received_at: float) -> StoreResult:
        """Store the batch's new records and their class counts; all or nothing.

        Raises `ServiceUnavailable` (503) when the database cannot take it; the
        transaction is then rolled back, so a retry starts from a clean slate.
        """
        first: dict[str, int] = {}
        for index, record in enumerate(batch.records):
            first.setdefault(record.record_id, index)  # in-batch repeats: first one wins
        device_id, batch_id = batch.device_id, batch.batch_id
        rows: list[dict[str, Any]] = []
        classes: dict[str, dict[str, int]] = {}
        for record_id in sorted(first):
            index = first[record_id]
            record = batch.records[index]
            rows.append({
                "device_id": device_id,
                "record_id": record_id,
                "seq": record.seq,
                "image_id": record.image_id,
                "ts": record.timestamp,
                "model_version": record.model_version,
                "prediction": _serialize(index, record.prediction),
                "received_at": received_at,
                "batch_id": batch_id,
            })
            counted = count_classes(record.prediction)
            if counted:
                classes[record_id] = counted

        writer = self._writer
        with translate_db_errors(), self._db.write_lock, self._db.engine.begin() as conn:
            inserted = writer.insert_records(conn, rows)
            count_rows = [
                {"record_pk": pk, "class_name": name, "device_id": device_id, "n": n}
                for pk, record_id in inserted
                for name, n in classes.get(record_id, {}).items()
            ]
            if count_rows:
                writer.insert_counts(conn, count_rows)
        accepted = len(inserted)
        return StoreResult(accepted=accepted, duplicates=len(batch.records) - accepted)
