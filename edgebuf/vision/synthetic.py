"""Deterministic synthetic "conveyor" frames with YOLO labels, to train and test offline.

A frame is a belt seen from above (rails, slats, dirt specks, sensor noise) carrying one to
four metal parts (rounded plates, discs, hexagon nuts); about a third of the parts carry a
defect (a rust-brown pit or scratch), labelled with its own box inside the part's box. The
same ``(seed, index)`` always gives the same pixels and labels, so a held-out set is just
another seed. Only numpy and Pillow are used.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASS_NAMES: tuple[str, ...] = ("part", "defect")
PART, DEFECT = 0, 1
DEFECT_RATE = 0.5


@dataclass(frozen=True)
class Box:
    """One labelled object: class index and pixel corners (x0, y0, x1, y1)."""

    cls: int
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def name(self) -> str:
        return CLASS_NAMES[self.cls]

    def yolo_line(self, width: int, height: int) -> str:
        """``cls cx cy w h``, normalised to the image, as YOLO label files want."""
        cx = (self.x0 + self.x1) / 2 / width
        cy = (self.y0 + self.y1) / 2 / height
        w = (self.x1 - self.x0) / width
        h = (self.y1 - self.y0) / height
        return f"{self.cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def _frame_rng(seed: int, index: int) -> np.random.Generator:
    # SeedSequence mixes both numbers, so frame i of seed s shares nothing with seed s+1.
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _belt(rng: np.random.Generator, size: int) -> Image.Image:
    base = int(rng.integers(55, 95))
    img = Image.new("RGB", (size, size), (base, base, base + 4))
    draw = ImageDraw.Draw(img)
    rail = int(size * 0.08)
    rail_tone = int(rng.integers(130, 170))
    draw.rectangle([0, 0, size, rail], fill=(rail_tone, rail_tone, rail_tone - 10))
    draw.rectangle([0, size - rail, size, size], fill=(rail_tone, rail_tone, rail_tone - 10))
    pitch = int(rng.integers(28, 48))
    offset = int(rng.integers(0, pitch))
    for x in range(offset, size, pitch):  # belt slats
        draw.line([(x, rail), (x, size - rail)], fill=(base - 18, base - 18, base - 14), width=2)
    for _ in range(int(rng.integers(5, 25))):  # dirt specks: unlabelled distractors
        x, y, r = rng.integers(0, size), rng.integers(rail, size - rail), rng.integers(1, 4)
        tone = int(rng.integers(20, 50))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(tone, tone, tone))
    return img


def _part_outline(
    kind: str, cx: float, cy: float, r: float, angle: float
) -> list[tuple[float, float]]:
    if kind == "disc":
        sides, radii = 32, [r] * 32
    elif kind == "hexnut":
        sides, radii = 6, [r] * 6
    else:  # plate: a rectangle with an aspect ratio, as a polygon so it can rotate
        sides, radii = 4, [r] * 4
    pts = []
    for i in range(sides):
        a = angle + 2 * math.pi * i / sides + (math.pi / 4 if kind == "plate" else 0)
        stretch = 1.0 if kind != "plate" or i % 2 else 0.75
        pts.append((cx + radii[i] * math.cos(a), cy + radii[i] * math.sin(a) * stretch))
    return pts


def _bbox(points: list[tuple[float, float]], size: int) -> tuple[float, float, float, float]:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return (
        max(0.0, min(xs)),
        max(0.0, min(ys)),
        min(size - 1.0, max(xs)),
        min(size - 1.0, max(ys)),
    )


def _inside(
    points: list[tuple[float, float]],
    outline: list[tuple[float, float]],
    cx: float,
    cy: float,
    margin: float,
) -> bool:
    # ``outline`` is convex; shrink it about the part's centre by ``margin`` and test each point.
    poly = [(cx + (x - cx) * margin, cy + (y - cy) * margin) for x, y in outline]
    for px, py in points:
        signs = {
            (bx - ax) * (py - ay) - (by - ay) * (px - ax) > 0
            for (ax, ay), (bx, by) in zip(poly, poly[1:] + poly[:1])
        }
        if len(signs) > 1:
            return False
    return True


def _defect(
    rng: np.random.Generator,
    draw: ImageDraw.ImageDraw,
    cx: float,
    cy: float,
    r: float,
    outline: list[tuple[float, float]],
    size: int,
) -> Box:
    # Off the part's centre (a detector's best anchors for the part sit at its centre, and
    # a defect there has to compete with the part for them), but still on the part.
    rust = (int(rng.integers(120, 170)), int(rng.integers(45, 80)), int(rng.integers(15, 35)))
    pit = rng.random() < 0.5
    rad = rng.uniform(9, 14)
    length = rng.uniform(26, 38)
    t = rng.uniform(0, math.pi)
    jitter = rng.uniform(0.7, 1.2, size=(2, 9))
    for dist_scale in np.linspace(0.6, 0.0, 13):
        a = rng.uniform(0, 2 * math.pi)
        dist = r * dist_scale
        dx, dy = cx + dist * math.cos(a), cy + dist * math.sin(a)
        if pit:  # pit: an irregular rust-brown blob
            pts = [
                (dx + rad * jitter[0, k] * math.cos(u), dy + rad * jitter[1, k] * math.sin(u))
                for k, u in enumerate(np.linspace(0, 2 * math.pi, 9, endpoint=False))
            ]
        else:  # scratch: a dark rust streak
            pts = [
                (dx - length / 2 * math.cos(t), dy - length / 2 * math.sin(t)),
                (dx + length / 2 * math.cos(t), dy + length / 2 * math.sin(t)),
            ]
        if _inside(pts, outline, cx, cy, 0.9):
            break
    if pit:
        draw.polygon(pts, fill=rust, outline=(40, 25, 15))
    else:
        draw.line(pts, fill=rust, width=int(rng.integers(5, 8)))
    x0, y0, x1, y1 = _bbox(pts, size)
    return Box(DEFECT, x0 - 2, y0 - 2, x1 + 2, y1 + 2)


def render_frame(seed: int, index: int, size: int = 320) -> tuple[Image.Image, list[Box]]:
    """Render frame ``index`` of the set ``seed``: an RGB image and its labelled boxes."""
    rng = _frame_rng(seed, index)
    img = _belt(rng, size)
    draw = ImageDraw.Draw(img)
    rail = size * 0.08
    boxes: list[Box] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(30):  # rejection sampling: parts do not overlap
            r = rng.uniform(size * 0.09, size * 0.16)
            cx = rng.uniform(r + 2, size - r - 2)
            cy = rng.uniform(rail + r, size - rail - r)
            if all(math.hypot(cx - px, cy - py) > r + pr + 4 for px, py, pr in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        kind = ("plate", "disc", "hexnut")[int(rng.integers(0, 3))]
        pts = _part_outline(kind, cx, cy, r, rng.uniform(0, math.pi))
        tone = int(rng.integers(150, 225))
        tint = rng.integers(-12, 13, size=3)
        colour = tuple(int(np.clip(tone + t, 0, 255)) for t in tint)
        shadow = [(x + 4, y + 4) for x, y in pts]
        draw.polygon(shadow, fill=(25, 25, 28))
        draw.polygon(pts, fill=colour, outline=(tone - 60, tone - 60, tone - 55))
        if kind == "hexnut":
            hole = r * 0.35
            draw.ellipse([cx - hole, cy - hole, cx + hole, cy + hole], fill=(40, 40, 44))
        boxes.append(Box(PART, *_bbox(pts, size)))
        if kind != "hexnut" and rng.random() < DEFECT_RATE:
            boxes.append(_defect(rng, draw, cx, cy, r, pts, size))
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.9))))
    pixels = np.asarray(img, dtype=np.float32)
    pixels = pixels * rng.uniform(0.85, 1.15) + rng.normal(0, rng.uniform(2, 7), pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), boxes


def frames(seed: int, count: int, size: int = 320) -> Iterator[tuple[str, Image.Image, list[Box]]]:
    """Yield ``(image_id, image, boxes)`` for frames 0..count-1 of the set ``seed``."""
    for i in range(count):
        img, boxes = render_frame(seed, i, size)
        yield f"conveyor-s{seed}-{i:05d}", img, boxes


def write_split(root: Path, split: str, seed: int, count: int, size: int = 320) -> int:
    """Write ``images/<split>/*.png`` and ``labels/<split>/*.txt``; return the object count."""
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    objects = 0
    for image_id, img, boxes in frames(seed, count, size):
        img.save(images / f"{image_id}.png")
        lines = [b.yolo_line(size, size) for b in boxes]
        (labels / f"{image_id}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        objects += len(boxes)
    return objects


def write_dataset(
    root: Path, *, train: int, val: int, seed: int = 0, val_seed: int = 1, size: int = 320
) -> Path:
    """Write a YOLO dataset (train from ``seed``, val from ``val_seed``); return its yaml."""
    root = Path(root).resolve()
    write_split(root, "train", seed, train, size)
    write_split(root, "val", val_seed, val, size)
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(CLASS_NAMES))
    yaml_path = root / "conveyor.yaml"
    yaml_path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return yaml_path
