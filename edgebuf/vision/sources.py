"""Frame sources for the edge service: a folder of images, a video, a camera, or synthetic.

``open_source(spec)`` picks by the spec: an integer is a camera index, ``synthetic`` or
``synthetic:SEED`` renders conveyor frames forever, a folder yields its images in name
order, an image file yields itself, anything else (a video file, an ``rtsp://`` URL) goes
to OpenCV's ``VideoCapture``. Each yields ``(image_id, frame)`` with ``frame`` an
H x W x 3 BGR uint8 array, the layout OpenCV and ultralytics use.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class SourceError(RuntimeError):
    """The source could not be opened or stopped delivering frames."""


def _read_image(path: Path) -> Any:
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])


def _folder(root: Path, loop: bool) -> Iterator[tuple[str, Any]]:
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SourceError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {root}")
    for rnd in itertools.count() if loop else range(1):
        for path in files:
            yield (path.name if rnd == 0 else f"{path.name}#{rnd}"), _read_image(path)


def _capture(target: int | str, name: str, loop: bool) -> Iterator[tuple[str, Any]]:
    try:
        import cv2
    except ImportError as exc:
        raise SourceError(
            "video and camera sources need OpenCV (pip install edgebuf[yolo])"
        ) from exc
    cap = cv2.VideoCapture(target)
    if not cap.isOpened():
        raise SourceError(f"cannot open {name}")
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                if loop and not isinstance(target, int) and index:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                if isinstance(target, int):
                    raise SourceError(f"{name} stopped delivering frames")
                return
            yield f"{name}-{index:08d}", frame
            index += 1
    finally:
        cap.release()


def _synthetic(seed: int, size: int = 320) -> Iterator[tuple[str, Any]]:
    import numpy as np

    from edgebuf.vision.synthetic import render_frame

    for i in itertools.count():
        img, _boxes = render_frame(seed, i, size)
        yield f"conveyor-s{seed}-{i:08d}", np.ascontiguousarray(np.asarray(img)[:, :, ::-1])


def open_source(spec: str, *, loop: bool = False) -> Iterator[tuple[str, Any]]:
    """An iterator of ``(image_id, frame)`` for ``spec``.

    A source that cannot be opened raises SourceError here or, for cameras and videos, at
    the first ``next()``; a camera that stops delivering raises it mid-stream.

    ``loop`` restarts a folder or video file at its end (a demo line that never stops).
    """
    if spec.isdigit():
        return _capture(int(spec), f"camera{spec}", loop=False)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        seed = spec.partition(":")[2]
        return _synthetic(int(seed) if seed else 0)
    path = Path(spec)
    if path.is_dir():
        return _folder(path, loop)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        return iter([(path.name, _read_image(path))])
    if "://" not in spec and not path.exists():
        raise SourceError(f"no such source: {spec}")
    return _capture(spec, path.stem or "stream", loop)
