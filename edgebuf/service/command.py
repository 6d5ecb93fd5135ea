"""``edgebuf edge``: the command that runs the inference service (options, then ``serve``)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from edgebuf.service.edge import EdgeService, serve

log = logging.getLogger("edgebuf.edge")


@click.command("edge")
@click.option(
    "--source",
    required=True,
    help="Image folder, image, video file, stream URL, camera index (0) or 'synthetic[:SEED]'.",
)
@click.option(
    "--model",
    "model",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("data/conveyor_yolov8n.pt"),
    show_default=True,
    help="Weights (.pt, or an .onnx export).",
)
@click.option(
    "--detector",
    default="ultralytics",
    show_default=True,
    help="'ultralytics', 'fake', or module:callable(weights, **options).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--imgsz", default=320, show_default=True, type=int)
@click.option("--conf", default=0.25, show_default=True, type=float)
@click.option(
    "--fps", type=float, default=None, help="Cap the frame rate [default: as fast as frames come]."
)
@click.option(
    "--loop/--no-loop",
    default=False,
    show_default=True,
    help="Restart a folder or video at its end.",
)
@click.option("--max-frames", type=int, default=None)
@click.option(
    "--flush-timeout",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds to keep sending on shutdown.",
)
@click.option("--exit-when-done", is_flag=True, help="Exit once the source is exhausted.")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def edge_command(
    source: str,
    model: Path,
    detector: str,
    host: str,
    port: int,
    imgsz: int,
    conf: float,
    fps: float | None,
    loop: bool,
    max_frames: int | None,
    flush_timeout: float,
    exit_when_done: bool,
    log_level: str,
) -> None:
    """Run the detector over a source, log every prediction, serve health and metrics.

    The buffer and cloud come from the client's settings (BUFFER_DB_PATH,
    CLOUD_LOGGING_ENDPOINT, DEVICE_ID, EDGEBUF_*).
    """
    from edgebuf.client import EnhancedAsyncLoggingClient
    from edgebuf.errors import EdgebufError
    from edgebuf.vision.detector import load_detector

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        client = EnhancedAsyncLoggingClient()
    except EdgebufError as exc:
        raise click.ClickException(str(exc)) from None
    options = {"imgsz": imgsz, "conf": conf} if detector == "ultralytics" else {}
    service = EdgeService(
        client,
        lambda: load_detector(detector, model, **options),
        source,
        loop=loop,
        fps=fps,
        max_frames=max_frames,
        flush_timeout=flush_timeout,
    )
    serve(service, host, port, exit_when_done=exit_when_done)
