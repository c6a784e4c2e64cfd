"""Pictures a trial leaves behind: decoded keypoints drawn on validation images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from kdtune.skeleton import LIMBS


def draw_persons(
    image_rgb: np.ndarray, persons: Sequence[np.ndarray], scale: int = 2
) -> np.ndarray:
    """Draw each person's limbs and joints ([18, 3] arrays: x, y, score; score 0 = missing)."""
    img = cv2.resize(image_rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    img = np.ascontiguousarray(img)
    for p, kps in enumerate(persons):
        colour = _colour(p)
        pts = [(int(x * scale), int(y * scale)) if s > 0 else None for x, y, s in kps]
        for a, b in LIMBS:
            start, end = pts[a], pts[b]
            if start is not None and end is not None:
                cv2.line(img, start, end, colour, 2, cv2.LINE_AA)
        for pt in pts:
            if pt is not None:
                cv2.circle(img, pt, 3, (255, 255, 255), -1, cv2.LINE_AA)
    return img


def save_grid(path: Path, tiles: Sequence[np.ndarray], columns: int = 4) -> Path:
    """Tile RGB images of one size into a grid and write it as PNG."""
    if not tiles:
        raise ValueError("no tiles to draw")
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    grid = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = tile
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path


def _colour(i: int) -> tuple[int, int, int]:
    palette = [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
    ]
    return palette[i % len(palette)]
