"""Figures of the quality benchmarks: rows of titled image panels, written as one PNG."""
from __future__ import annotations

import os

import numpy as np


def save_panels(path: str, rows, gap: int = 6, label: int = 18) -> None:
    """Rows of (title, (1|3, H, W) uint8) panels, no stretch (the values the plugin writes);
    1-band panels are shown grey."""
    from PIL import Image, ImageDraw
    rows = [[(title, np.repeat(a, 3, 0) if a.shape[0] == 1 else a[:3]) for title, a in row] for row in rows]
    height = max(a.shape[1] for row in rows for _, a in row) + label
    width = max(sum(a.shape[2] + gap for _, a in row) for row in rows) - gap
    out = Image.new("RGB", (width, len(rows) * (height + gap) - gap), "white")
    draw = ImageDraw.Draw(out)
    for r, row in enumerate(rows):
        x, y = 0, r * (height + gap)
        for title, a in row:
            out.paste(Image.fromarray(np.moveaxis(a, 0, -1)), (x, y + label))
            draw.text((x + 4, y + 3), title, fill="black")
            x += a.shape[2] + gap
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    out.save(path)
