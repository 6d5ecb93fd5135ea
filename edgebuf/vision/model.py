"""Load ultralytics offline, and name a weights file by its content.

Factory networks (and this project's CI) reach no model hub, so before ultralytics is
imported: ``YOLO_OFFLINE=1`` stops its update and hub checks, ``YOLO_CONFIG_DIR`` keeps
its settings file out of the home directory, and a TrueType font is put where its plotting
code looks for Arial (training draws label plots and would otherwise download one).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_WEIGHTS = Path("data/conveyor_yolov8n.pt")


def prepare_offline(config_dir: str | os.PathLike[str] | None = None) -> Path:
    """Set ultralytics' environment for a machine with no internet; return its config dir.

    Values already in the environment win. Call before ``import ultralytics`` (later calls
    still place the font, but the settings were read at import). ``OMP_NUM_THREADS`` is set
    to the core count because ultralytics would otherwise pin CPU inference to one thread.
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    if config_dir is not None:
        os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    else:
        os.environ.setdefault(
            "YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / f"edgebuf-yolo-{os.getuid()}")
        )
    root = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    root.mkdir(parents=True, exist_ok=True)
    font = root / "Arial.ttf"
    if not font.exists():
        found = _any_ttf()
        if found is not None:
            shutil.copyfile(found, font)
    return root


def _any_ttf() -> Path | None:
    try:
        import matplotlib

        bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        if bundled.exists():
            return bundled
    except ImportError:
        pass
    for folder in ("/usr/share/fonts", "/usr/local/share/fonts"):
        for path in sorted(Path(folder).rglob("*.ttf")) if Path(folder).is_dir() else ():
            return path
    return None


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a weights file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_version(path: str | os.PathLike[str]) -> str:
    """``<file stem>@<first 12 hex of its SHA-256>``: changes whenever the weights do."""
    return f"{Path(path).stem}@{weights_sha256(path)[:12]}"


def load_yolo(path: str | os.PathLike[str], task: str = "detect") -> Any:
    """An ultralytics ``YOLO`` for a ``.pt`` (or ``.onnx`` export) file, loaded offline."""
    prepare_offline()
    if not Path(path).exists():
        raise FileNotFoundError(f"no model weights at {path}")
    from ultralytics import YOLO

    return YOLO(str(path), task=task)


def export_onnx(
    weights: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, imgsz: int = 320
) -> Path:
    """Export ``weights`` to ONNX (fixed ``imgsz`` input, simplified graph) and return the
    ``.onnx`` path; ``load_yolo`` and ``edgebuf edge --model`` take it like the ``.pt``.

    On a small box onnxruntime alone runs the model without torch at inference time.
    Needs the ``onnx`` extra (onnx, onnxslim to write it; onnxruntime to run it).
    """
    target = Path(weights).with_suffix(".onnx") if out is None else Path(out)
    # ultralytics writes the export beside its input: work on a copy, so the weights'
    # folder may be read-only and nothing but ``target`` appears.
    with tempfile.TemporaryDirectory(prefix="edgebuf-onnx-") as scratch:
        copy = Path(scratch) / f"{target.stem}.pt"
        shutil.copyfile(weights, copy)
        written = load_yolo(copy).export(
            format="onnx", imgsz=imgsz, simplify=True, dynamic=False, verbose=False
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(written, target)
    return target
