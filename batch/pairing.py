"""Build a manifest from folders of scenes: each optical file with its SAR partner.

Files are matched on what their names say. ``key`` is a regular expression searched in
each file name; its named groups must be equal for a pair, except ``date`` (8 digits,
YYYYMMDD, dashes allowed), where the nearest SAR date within ``max_days`` wins. The
default key reads an MGRS tile (``T31UDQ``) when both names have one, and the first date::

    S2B_MSIL2A_20200223T035541_N0214_R004_T48QWD_20200223T073012.tif
    S1A_IW_GRDH_20200224T110503_T48QWD_db.tif          -> pair (same tile, 1 day apart)
"""
from __future__ import annotations

import datetime as dt
import glob
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .manifest import TOOLS, ManifestError

DEFAULT_KEY = r"(?=(?:.*?(?<![0-9A-Z])(?P<tile>T\d{2}[A-Z]{3})(?![A-Z]))?)(?=.*?(?P<date>(?:19|20)\d{2}-?\d{2}-?\d{2}))"


def _keys(path: str, pattern: re.Pattern) -> Optional[Dict[str, str]]:
    match = pattern.search(os.path.basename(path))
    if match is None:
        return None
    return {k: v for k, v in match.groupdict().items() if v is not None}


def _date(text: str) -> dt.date:
    digits = text.replace("-", "")
    return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))


def pair_scenes(optical: str, sar: Optional[str] = None, *, tool: str, out_dir: str, key: str = DEFAULT_KEY,
                max_days: float = 0, suffix: Optional[str] = None,
                options: Optional[Dict[str, Any]] = None) -> Tuple[List[Dict[str, Any]], List[str]]:
    """(manifest rows, optical files left without a partner) for the files ``optical`` and
    ``sar`` (glob patterns) match. ``options`` are added to every row (e.g. KEEP_CLEAR)."""
    if tool not in TOOLS:
        raise ManifestError(f"unknown tool {tool!r}; use one of {', '.join(TOOLS)}")
    pattern = re.compile(key)
    opticals = sorted(glob.glob(os.path.expanduser(optical), recursive=True))
    if not opticals:
        raise ManifestError(f"no optical file matches {optical!r}")
    spec = TOOLS[tool].spec
    needs_sar = spec.input("sar") is not None and spec.input("sar").required
    if needs_sar and not sar:
        raise ManifestError(f"{tool} needs SAR files: give a SAR pattern")
    sars = []
    if sar:
        for path in sorted(glob.glob(os.path.expanduser(sar), recursive=True)):
            keys = _keys(path, pattern)
            if keys is not None:
                sars.append((path, keys))
        if not sars:
            raise ManifestError(f"no SAR file matches {sar!r} with a name the key {key!r} can read")
    suffix = "_" + spec.output_suffix if suffix is None else suffix     # as the dialog suggests
    rows, unmatched = [], []
    for path in opticals:
        row = {"tool": tool, spec.input("optical").param: os.path.abspath(path)}
        stem = os.path.splitext(os.path.basename(path))[0]
        row[spec.outputs[0].param] = os.path.abspath(os.path.join(out_dir, f"{stem}{suffix}.tif"))
        if sar:
            partner = _partner(path, sars, pattern, max_days)
            if partner is None:
                unmatched.append(path)
                continue
            row[spec.input("sar").param] = os.path.abspath(partner)
        row.update(options or {})
        rows.append(row)
    return rows, unmatched


def _partner(path: str, sars: Sequence[Tuple[str, Dict[str, str]]], pattern, max_days: float) -> Optional[str]:
    keys = _keys(path, pattern)
    if keys is None:
        return None
    best, best_gap = None, None
    for candidate, other in sars:
        shared = set(keys) & set(other) - {"date"}
        if any(keys[k] != other[k] for k in shared):
            continue
        gap = 0.0
        if "date" in keys and "date" in other:
            gap = abs((_date(keys["date"]) - _date(other["date"])).days)
            if gap > max_days:
                continue
        if best_gap is None or gap < best_gap:
            best, best_gap = candidate, gap
    return best
