"""The edge inference service: ``edgebuf edge --source ... --model ... --port 8000``.

A detector loop (the main thread) reads frames, runs the detector and commits every
prediction to the buffered client; uvicorn serves a small FastAPI app from a second thread:

    GET /health   200 while the process is alive (liveness)
    GET /ready    200 once the model is loaded and the buffer accepts a write (readiness)
    GET /status   the buffer monitor's full status, plus an ``edge`` section: frames,
                  inference and logging time (ms: mean, p50, p95), source, model
    GET /metrics  Prometheus text: frames, errors, inference / logging seconds, detections
                  per class, buffer records by status, oldest pending age, connectivity;
                  record counters (sent, dead-lettered, evicted, refused), backlog,
                  capacity use and disk free, which deploy/prometheus/'s rules read

SIGTERM (or SIGINT) stops inference after the current frame, marks the service not ready,
flushes for at most ``flush_timeout`` seconds, closes the client and then the HTTP server.
Whatever was not delivered stays ``pending`` in the SQLite buffer for the next start.
uvicorn runs outside the main thread so that it installs no signal handlers of its own.
"""

from __future__ import annotations

import logging
import signal
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from edgebuf.vision.detector import Detector
from edgebuf.vision.sources import SourceError, open_source

log = logging.getLogger("edgebuf.edge")

_INFER_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5)
_LOG_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5)


class _Timings:
    """Recent durations (ms) of one stage; the totals are Prometheus histograms too."""

    def __init__(self, keep: int = 2048) -> None:
        self.recent: deque[float] = deque(maxlen=keep)
        self.total_ms = 0.0
        self.count = 0

    def add(self, ms: float) -> None:
        self.recent.append(ms)
        self.total_ms += ms
        self.count += 1

    def summary(self) -> dict[str, float | None]:
        if not self.recent:
            return {"mean": None, "p50": None, "p95": None, "count": 0}
        ordered = sorted(self.recent)
        return {
            "mean": round(self.total_ms / self.count, 3),
            "p50": round(statistics.median(ordered), 3),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "count": self.count,
        }


class EdgeService:
    """Detector loop + HTTP app around one ``EnhancedAsyncLoggingClient``.

    ``detector_factory`` is called once (after the HTTP server is up, so liveness answers
    while a large model loads). ``run_once`` handles one frame and is what tests drive.
    """

    def __init__(
        self,
        client: Any,
        detector_factory: Callable[[], Detector],
        source: str,
        *,
        loop: bool = False,
        fps: float | None = None,
        max_frames: int | None = None,
        flush_timeout: float = 15.0,
        source_retry_s: float = 5.0,
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.client = client
        self.detector_factory = detector_factory
        self.detector: Detector | None = None
        self.source_spec, self.loop, self.fps = source, loop, fps
        self.max_frames, self.flush_timeout = max_frames, flush_timeout
        self.source_retry_s = source_retry_s
        self.stop_event = threading.Event()
        self.shutting_down = False
        self.source_state = "not opened"
        self.started_at = time.time()
        self.frames = 0
        self.inference = _Timings()
        self.logging = _Timings()
        self.registry = r = CollectorRegistry()
        self.m_frames = Counter(
            "edge_frames", "Frames run through the detector and logged.", registry=r
        )
        self.m_errors = Counter(
            "edge_frame_errors", "Frames lost to an error, by stage.", ["stage"], registry=r
        )
        self.m_infer = Histogram(
            "edge_inference_seconds", "Detector time per frame.", buckets=_INFER_BUCKETS, registry=r
        )
        self.m_log = Histogram(
            "edge_logging_seconds",
            "log_prediction time per frame (the local SQLite commit).",
            buckets=_LOG_BUCKETS,
            registry=r,
        )
        self.m_dets = Counter(
            "edge_detections", "Detections logged, by class.", ["class_name"], registry=r
        )
        self.m_model = Gauge(
            "edge_model_info", "The loaded model.", ["model", "version"], registry=r
        )
        from edgebuf.service.metrics import BufferCollector

        r.register(BufferCollector(self))

    # ------------------------------------------------------------------ state
    def buffer_writable(self) -> bool:
        """One empty write transaction: the file is writable and its lock obtainable."""
        try:
            self.client.store.check_writable()
            return True
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.warning("buffer not writable: %s", exc)
            return False

    def ready(self) -> tuple[bool, str]:
        if self.shutting_down:
            return False, "shutting down"
        if self.detector is None:
            return False, "model not loaded"
        if not self.buffer_writable():
            return False, "buffer not writable"
        return True, "ready"

    def edge_status(self) -> dict[str, Any]:
        infer, logged = self.inference.summary(), self.logging.summary()
        share = None
        if infer["mean"] and logged["mean"] is not None:
            share = round(100.0 * logged["mean"] / infer["mean"], 3)
        return {
            "frames": self.frames,
            "uptime_s": round(time.time() - self.started_at, 1),
            "source": {"spec": self.source_spec, "state": self.source_state},
            "model": None
            if self.detector is None
            else {"name": self.detector.model_name, "version": self.detector.model_version},
            "inference_ms": infer,
            "logging_ms": logged,
            "logging_vs_inference_pct": share,
            "shutting_down": self.shutting_down,
        }

    def full_status(self) -> dict[str, Any]:
        status = self.client.get_buffer_status()
        status["edge"] = self.edge_status()
        return status

    # ------------------------------------------------------------------ the loop
    def load(self) -> None:
        started = time.perf_counter()
        self.detector = self.detector_factory()
        self.m_model.labels(self.detector.model_name, self.detector.model_version).set(1)
        log.info(
            "model %s loaded in %.1f s", self.detector.model_version, time.perf_counter() - started
        )

    def run_once(self, image_id: str, frame: Any) -> str | None:
        """Detect on one frame and commit the record; return its record id (None on error)."""
        assert self.detector is not None, "load() first"
        t0 = time.perf_counter()
        try:
            prediction = self.detector.detect(frame)
        except Exception:
            self.m_errors.labels("inference").inc()
            log.exception("inference failed on %s", image_id)
            return None
        t1 = time.perf_counter()
        # A logging error (disk full twice, buffer full under "reject") propagates: the
        # operator must see it, and the frame's loss is counted, not hidden.
        try:
            record_id = self.client.log_prediction(
                prediction, image_id=image_id, model_version=self.detector.model_version
            )
        except Exception:
            self.m_errors.labels("logging").inc()
            raise
        t2 = time.perf_counter()
        self.frames += 1
        self.inference.add((t1 - t0) * 1000)
        self.logging.add((t2 - t1) * 1000)
        self.m_frames.inc()
        self.m_infer.observe(t1 - t0)
        self.m_log.observe(t2 - t1)
        for det in prediction.get("detections", ()):
            self.m_dets.labels(str(det.get("class_name"))).inc()
        return record_id

    def _frames(self) -> Iterator[tuple[str, Any]]:
        """Frames from the source, reopening a camera or stream that fails."""
        while not self.stop_event.is_set():
            try:
                self.source_state = "open"
                yield from open_source(self.source_spec, loop=self.loop)
                self.source_state = "finished"
                return
            except SourceError as exc:
                self.source_state = f"error: {exc}"
                self.m_errors.labels("source").inc()
                log.error(
                    "source %s: %s; retrying in %.0f s", self.source_spec, exc, self.source_retry_s
                )
                self.stop_event.wait(self.source_retry_s)

    def run_detector(self) -> None:
        """Run until the source ends, ``max_frames`` is reached or ``stop()`` is called."""
        if self.detector is None:
            self.load()
        period = 1.0 / self.fps if self.fps else 0.0
        next_at = time.monotonic()
        for image_id, frame in self._frames():
            if self.stop_event.is_set():
                break
            self.run_once(image_id, frame)
            if self.max_frames is not None and self.frames >= self.max_frames:
                self.source_state = "max frames reached"
                break
            if period:
                next_at = max(next_at + period, time.monotonic() - period)
                self.stop_event.wait(max(0.0, next_at - time.monotonic()))
        self.report()

    def report(self) -> None:
        e = self.edge_status()
        log.info(
            "frames=%d inference mean %s ms p95 %s ms; logging mean %s ms p95 %s ms "
            "(%s%% of inference)",
            e["frames"],
            e["inference_ms"]["mean"],
            e["inference_ms"]["p95"],
            e["logging_ms"]["mean"],
            e["logging_ms"]["p95"],
            e["logging_vs_inference_pct"],
        )

    def stop(self) -> None:
        """Ask the loop to stop after the current frame (signal-handler safe)."""
        self.stop_event.set()

    def shutdown(self) -> bool:
        """Not ready, bounded flush, close the client; True if everything was delivered."""
        self.shutting_down = True
        delivered = False
        try:
            delivered = self.client.flush(timeout=self.flush_timeout)
        except Exception:
            log.exception("final flush failed")
        counts = self.client.store.counts()
        self.client.close(timeout=5.0)
        log.info(
            "closed: delivered=%s, %d pending stay on disk for the next start",
            delivered,
            counts["pending"] + counts["sending"],
        )
        return delivered


def create_edge_app(service: EdgeService) -> Any:
    """The FastAPI app of one service (no global state: tests build many)."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    app = FastAPI(title="edgebuf edge inference", version="1")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        ok, reason = service.ready()
        return JSONResponse({"ready": ok, "reason": reason}, status_code=200 if ok else 503)

    @app.get("/status")
    def status() -> dict[str, Any]:
        return service.full_status()

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def serve(service: EdgeService, host: str, port: int, *, exit_when_done: bool = False) -> bool:
    """Run HTTP + detector until SIGTERM/SIGINT (or the source ends, with ``exit_when_done``).

    Must be called from the main thread (it installs the signal handlers). Returns the
    final flush's outcome.
    """
    import uvicorn

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: service.stop())
    config = uvicorn.Config(
        create_edge_app(service),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    http = threading.Thread(target=server.run, name="edge-http", daemon=True)
    http.start()
    service.client.start()
    try:
        service.run_detector()
        if not exit_when_done:  # keep /health, /status, /metrics up until told to stop
            service.stop_event.wait()
    except Exception:
        log.exception("detector loop stopped")
        raise
    finally:
        delivered = service.shutdown()
        server.should_exit = True
        http.join(timeout=10)
    return delivered
