"""The minimal ingest endpoint: the practical ceiling of FastAPI + SQLite on this machine.

    python bench/raw_ingest_app.py --port 8123 --db /tmp/raw.db

One route, ``POST /log``, taking the cloud's wire format: it json-parses the body and
stores its records with one ``executemany`` of ``INSERT OR IGNORE`` (unique on device and
record id) in one transaction, on a SQLite file in WAL mode with synchronous=NORMAL.
No validation, no metrics, no gzip, no threadpool hop: what is left is the cost of the
stack itself. ``bench/drain.py`` runs it under uvicorn as the peer of the real cloud.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    image_id TEXT,
    ts REAL NOT NULL,
    model_version TEXT,
    prediction TEXT NOT NULL,
    received_at REAL NOT NULL,
    batch_id TEXT NOT NULL,
    UNIQUE (device_id, record_id)
)
"""
INSERT = (
    "INSERT OR IGNORE INTO predictions (device_id, record_id, seq, image_id, ts, model_version,"
    " prediction, received_at, batch_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def create_app(db_path: str) -> FastAPI:
    """The app, storing into ``db_path``."""
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(SCHEMA)
    app = FastAPI()

    @app.post("/log")
    async def log(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        device, batch_id, now = body["device_id"], body["batch_id"], time.time()
        rows = [
            (
                device,
                r["record_id"],
                r["seq"],
                r.get("image_id"),
                r["timestamp"],
                r.get("model_version"),
                json.dumps(r["prediction"], separators=(",", ":")),
                now,
                batch_id,
            )
            for r in body["records"]
        ]
        conn.execute("BEGIN")
        before = conn.total_changes
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")
        accepted = conn.total_changes - before
        return JSONResponse(
            {"batch_id": batch_id, "accepted": accepted, "duplicates": len(rows) - accepted}
        )

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description="minimal FastAPI + SQLite ingest endpoint")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True, help="SQLite file to store into")
    args = p.parse_args()
    uvicorn.run(
        create_app(args.db), host=args.host, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
