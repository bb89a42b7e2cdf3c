"""Streaming tiled inference: read a tile, run it, blend, write finished blocks, repeat.

Memory stays bounded by the tile size, not the scene: besides one batch of tiles the
engine keeps only the overlap zones still waiting for their neighbours: the right edge of
the previous tile (``T x O``) and the bottom edge of the previous tile row (``O x width``).
A block of ``S x S`` pixels (``S = T - O``) is final as soon as the tile that starts there
has been blended, and is written immediately as one GeoTIFF block.

The work itself is done by a *tile processor*::

    processor(inputs: {card input name: float32 (B, C, T, T)}, origins: [(row, col), ...])
        -> {card output name: float32 (B, C_out, T, T)}

with inputs and outputs in network units (see ``model_card`` for the band transforms).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.windows import Window

from .errors import Cancelled, InputError
from .model_card import ModelCard, TensorSpec
from .raster_io import (GeoTiffWriter, RasterSource, band_indexes_from_descriptions, describe_raster,
                        output_block_size, subgrid, to_dtype)
from .tiling import TileGrid, pad_to, tile_weights

log = logging.getLogger("skyclear")

TileProcessor = Callable[[Dict[str, np.ndarray], List[Tuple[int, int]]], Dict[str, np.ndarray]]
BlockHook = Callable[[Dict[str, np.ndarray], Dict[str, np.ndarray], np.ndarray], Dict[str, np.ndarray]]
Progress = Callable[[float, str], None]

SKYCLEAR_VERSION = "0.1.0"
GDAL_CACHE_MB = 128


@dataclass
class RunReport:
    outputs: Dict[str, str]
    provider: str
    tile_size: int
    overlap: int
    tiles: int
    seconds: float
    processor_seconds: float
    valid_fraction: float


# ---------------------------------------------------------------------------------------
# band transforms


def _band_arrays(spec: TensorSpec):
    lo = np.array([b.clip[0] if b.clip else -np.inf for b in spec.bands], np.float32)[:, None, None]
    hi = np.array([b.clip[1] if b.clip else np.inf for b in spec.bands], np.float32)[:, None, None]
    scale = np.array([b.scale for b in spec.bands], np.float32)[:, None, None]
    offset = np.array([b.offset for b in spec.bands], np.float32)[:, None, None]
    return lo, hi, scale, offset


def preprocess(raw: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Raster values -> network units: (clip(v) - offset) / scale, per band."""
    lo, hi, scale, offset = _band_arrays(spec)
    return (np.clip(raw, lo, hi) - offset) / scale


def postprocess(net: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Network units -> raster values (float): x * scale + offset, clipped to the band range."""
    lo, hi, scale, offset = _band_arrays(spec)
    return np.clip(net * scale + offset, lo, hi)


# ---------------------------------------------------------------------------------------
# inputs


def resolve_bands(path: str, spec: TensorSpec, label: str, bands: Optional[Sequence[int]],
                  model_name: str) -> List[int]:
    """Which file bands feed ``spec``: explicit list, else all bands when the count matches,
    else bands found by name in the file's band descriptions."""
    info = describe_raster(path)
    wanted = spec.band_names
    if bands:
        chosen = [int(b) for b in bands]
        if len(chosen) != len(wanted):
            raise InputError(f"{label}: {len(chosen)} band(s) chosen ({chosen}) but model '{model_name}' "
                             f"expects {len(wanted)} ({','.join(wanted)})")
        return chosen
    if info["count"] == len(wanted):
        return list(range(1, len(wanted) + 1))
    by_name = band_indexes_from_descriptions(info["descriptions"], wanted)
    if by_name:
        return by_name
    raise InputError(
        f"{label}: {os.path.basename(path)} has {info['count']} band(s) but model '{model_name}' expects "
        f"{len(wanted)} ({','.join(wanted)}), and its band descriptions do not name them. "
        f"Choose {len(wanted)} bands explicitly (a band list like 1,2,3)")


def open_sources(card: ModelCard, paths: Dict[str, str],
                 band_lists: Optional[Dict[str, Sequence[int]]] = None,
                 labels: Optional[Dict[str, str]] = None, extent=None) -> Dict[str, RasterSource]:
    """Open every card input on the grid of the first input (the optical one), cropped to
    ``extent`` (xmin, ymin, xmax, ymax in the optical CRS) when given.

    Checks band counts, dtypes, CRS and overlap before any work starts.
    """
    band_lists = band_lists or {}
    labels = labels or {}
    missing = [spec.name for spec in card.inputs if not paths.get(spec.name)]
    if missing:
        raise InputError(f"model '{card.name}' needs input(s) {missing}; none given")
    sources: Dict[str, RasterSource] = {}
    grid = None
    try:
        for spec in card.inputs:
            label = labels.get(spec.name, spec.name)
            path = paths[spec.name]
            bands = resolve_bands(path, spec, label, band_lists.get(spec.name), card.name)
            if grid is None and extent is not None:
                with RasterSource(path, bands, label) as whole:
                    grid = subgrid(whole.grid, extent)
            source = RasterSource(path, bands, label, grid=grid, resampling=spec.resampling)
            sources[spec.name] = source
            if spec.dtypes and source.dtype not in spec.dtypes:
                raise InputError(f"{label}: {os.path.basename(path)} is {source.dtype} but model '{card.name}' "
                                 f"accepts {', '.join(spec.dtypes)} for input '{spec.name}'")
            grid = grid or source.grid
    except Exception:
        for source in sources.values():
            source.close()
        raise
    return sources


# ---------------------------------------------------------------------------------------
# the streaming loop


@functools.lru_cache(maxsize=None)
def _return_large_buffers_to_the_os() -> None:
    """Serve allocations over 4 MiB (tiles, batches) by mmap so freeing them returns memory.

    glibc otherwise raises its mmap threshold after the first large free and carves later
    tiles out of its heaps, which fragment across the I/O and model threads: peak memory
    then creeps up with the number of tiles. No-op outside glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 4 * 1024 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


@dataclass
class _Output:
    spec: TensorSpec
    writer: GeoTiffWriter
    dtype: str
    nodata: Optional[float]


def _output_nodata(spec: TensorSpec, dtype: str, optical: RasterSource) -> float:
    """The optical nodata when the output shares its dtype, else the card's, else NaN/0."""
    floating = np.issubdtype(np.dtype(dtype), np.floating)
    if optical.nodata is not None and dtype == optical.dtype:
        return float(optical.nodata)
    if spec.nodata is not None:
        return float(spec.nodata)
    return float("nan") if floating else 0.0


def run_tiled(card: ModelCard, sources: Dict[str, RasterSource], processor: TileProcessor,
              outputs: Dict[str, str], tile_size: Optional[int] = None, overlap: Optional[int] = None,
              batch_size: int = 4, provider: str = "", progress: Optional[Progress] = None,
              is_cancelled: Optional[Callable[[], bool]] = None, block_hook: Optional[BlockHook] = None,
              extra_tags: Optional[Dict[str, str]] = None) -> RunReport:
    """Run ``processor`` over the whole grid and write the card outputs named in ``outputs``.

    ``block_hook(outputs_raw, inputs_raw, valid)`` may rewrite each finished block in raster
    units (e.g. to keep clear input pixels); it receives the raw input blocks on the grid.
    On any error or cancel, every output is removed and nothing else is left behind.
    """
    started = time.time()
    tile = tile_size or card.tile_size
    if tile % card.size_multiple:
        raise InputError(f"tile size {tile} must be a multiple of {card.size_multiple} for model '{card.name}'")
    ov = card.default_overlap if overlap is None else overlap
    if not 0 <= ov < tile:
        raise InputError(f"overlap {ov} must be at least 0 and smaller than the tile size {tile}")
    optical = sources[card.inputs[0].name]
    grid_def = optical.grid
    grid = TileGrid(grid_def.height, grid_def.width, tile, ov)
    unknown = sorted(set(outputs) - {o.name for o in card.outputs})
    if unknown:
        raise InputError(f"model '{card.name}' has no output(s) {unknown}")

    tags = {
        "SKYCLEAR_VERSION": SKYCLEAR_VERSION, "SKYCLEAR_MODEL": card.name,
        "SKYCLEAR_MODEL_VERSION": card.version, "SKYCLEAR_MODEL_TASK": card.task,
        "SKYCLEAR_CARD_SHA256": card.sha256, "SKYCLEAR_PROVIDER": provider,
        "SKYCLEAR_TILE_SIZE": str(tile), "SKYCLEAR_OVERLAP": str(ov),
        "SKYCLEAR_INPUTS": json.dumps({n: {"path": os.path.abspath(s.path), "bands": s.bands}
                                       for n, s in sources.items()}),
    }
    tags.update(extra_tags or {})
    block = output_block_size(grid.stride)
    _return_large_buffers_to_the_os()
    writers: Dict[str, _Output] = {}
    try:
        for name, path in outputs.items():
            spec = card.output(name)
            dtype = spec.dtype or optical.dtype
            nodata = _output_nodata(spec, dtype, optical)
            writer = GeoTiffWriter(path, grid_def, len(spec.bands), dtype, nodata,
                                   spec.band_names, dict(tags, SKYCLEAR_OUTPUT=name), block)
            writers[name] = _Output(spec, writer, dtype, nodata)
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            stats = _stream(card, sources, processor, writers, grid, batch_size, progress,
                            is_cancelled, block_hook)
        elapsed = time.time() - started
        for out in writers.values():
            out.writer.update_tags(SKYCLEAR_SECONDS=f"{elapsed:.2f}")
        written = {name: out.writer.commit() for name, out in writers.items()}
    except BaseException:
        for out in writers.values():
            out.writer.abort()
        raise
    return RunReport(outputs=written, provider=provider, tile_size=tile, overlap=ov, tiles=len(grid),
                     seconds=time.time() - started, processor_seconds=stats["processor_seconds"],
                     valid_fraction=stats["valid"] / max(1, grid.height * grid.width))


def _read_tile(sources: Dict[str, RasterSource], card: ModelCard, grid: TileGrid, y0: int, x0: int):
    """Network-ready inputs for one tile, reflect-padded past the scene edge, and validity."""
    h = min(grid.tile, grid.height - y0)
    w = min(grid.tile, grid.width - x0)
    window = Window(x0, y0, w, h)
    valid = np.ones((h, w), bool)
    tensors = {}
    for spec in card.inputs:
        data, ok = sources[spec.name].read(window)
        valid &= ok
        tensors[spec.name] = data
    for spec in card.inputs:
        data = preprocess(tensors[spec.name], spec)
        data[:, ~valid] = 0.0
        tensors[spec.name] = pad_to(data, grid.tile, grid.tile)
    return tensors, valid


def _batches(grid: TileGrid, batch_size: int):
    """(row, columns) of each batch: tiles of one tile row, left to right."""
    for r in range(grid.rows):
        for c0 in range(0, grid.cols, batch_size):
            yield r, range(c0, min(grid.cols, c0 + batch_size))


def _stream(card, sources, processor, writers, grid: TileGrid, batch_size, progress, is_cancelled, block_hook):
    """The blend loop. All dataset reads and writes run on one I/O thread, overlapping with
    the model on the calling thread. One thread, not two: GDAL may flush a dataset's dirty
    cache blocks from whichever thread needs cache space, so a reader thread could write
    the output behind a writer thread's back."""
    T, O, S = grid.tile, grid.overlap, grid.stride
    W = grid.width
    channels = {name: len(out.spec.bands) for name, out in writers.items()}
    # overlap zones still waiting for neighbours (weighted sums and weights)
    bottom = {n: np.zeros((c, O, W), np.float32) for n, c in channels.items()}
    bottom_w = np.zeros((O, W), np.float32)
    batches = list(_batches(grid, batch_size))
    done, processor_seconds, valid_pixels = 0, 0.0, 0

    def load(r, cols):
        return [_read_tile(sources, card, grid, r * S, c * S) for c in cols]

    def read_raw(window):
        return {spec.name: sources[spec.name].read(window)[0] for spec in card.inputs}

    with ThreadPoolExecutor(1, "skyclear-io") as io:
        upcoming = io.submit(load, *batches[0])
        writes = deque()
        for k, (r, cols) in enumerate(batches):
            if is_cancelled and is_cancelled():
                raise Cancelled("cancelled by the user; no output was written")
            tiles = upcoming.result()
            if k + 1 < len(batches):
                upcoming = io.submit(load, *batches[k + 1])
            y0 = r * S
            if cols.start == 0:
                right = {n: np.zeros((c, T, O), np.float32) for n, c in channels.items()}
                right_w = np.zeros((T, O), np.float32)
            batch = {spec.name: np.stack([t[0][spec.name] for t in tiles]).astype(np.float32, copy=False)
                     for spec in card.inputs}
            tick = time.time()
            result = processor(batch, [(y0, c * S) for c in cols])
            processor_seconds += time.time() - tick
            height = grid.finished_span(r, grid.rows, grid.height)[1] - y0
            for i, c in enumerate(cols):
                x0 = c * S
                span = grid.finished_span(c, grid.cols, W)[1] - x0
                weights = tile_weights(grid, r, c)
                acc = {n: np.asarray(result[n][i], np.float32) * weights for n in writers}
                wsum = weights.copy()
                # add the previous tile's right overlap and the previous row's bottom overlap
                if c > 0 and O:
                    for n in writers:
                        acc[n][:, :, :O] += right[n]
                    wsum[:, :O] += right_w
                if r > 0 and O:
                    for n in writers:
                        acc[n][:, :O, :span] += bottom[n][:, :, x0:x0 + span]
                    wsum[:O, :span] += bottom_w[:, x0:x0 + span]
                if O:  # this tile's columns of `bottom` are consumed: reuse them for the next row
                    for n in writers:
                        right[n] = acc[n][:, :, S:].copy()
                        bottom[n][:, :, x0:x0 + span] = acc[n][:, S:, :span]
                    right_w = wsum[:, S:].copy()
                    bottom_w[:, x0:x0 + span] = wsum[S:, :span]
                window = Window(x0, y0, span, height)
                raw = {n: postprocess(acc[n][:, :height, :span] / wsum[:height, :span], out.spec)
                       for n, out in writers.items()}
                valid = tiles[i][1][:height, :span]
                if block_hook is not None:
                    raw = block_hook(raw, io.submit(read_raw, window).result(), valid)
                valid_pixels += int(valid.sum())
                writes.append(io.submit(_write_block, writers, raw, valid, window))
                while len(writes) > 2 * batch_size:
                    writes.popleft().result()
                done += 1
            if progress:
                progress(done / len(grid), f"tile {done}/{len(grid)}")
        for pending in writes:
            pending.result()
    return {"processor_seconds": processor_seconds, "valid": valid_pixels}


def _write_block(writers, raw, valid, window):
    for n, out in writers.items():
        data = to_dtype(raw[n], out.dtype)
        if np.issubdtype(data.dtype, np.integer) and out.nodata is not None:
            # a valid pixel must not read as nodata: nudge it by one unit
            nudge = (data == out.nodata) & valid
            data[nudge] = out.nodata + (1 if out.nodata < np.iinfo(data.dtype).max else -1)
        data[:, ~valid] = out.nodata
        out.writer.write(data, window)
