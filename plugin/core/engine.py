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

import contextlib
import contextvars
import dataclasses
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

from . import atomic
from .errors import Cancelled, InputError
from .model_card import ModelCard, TensorSpec
from .raster_io import GeoTiffWriter, RasterSource, gdal_threads, output_block_size, subgrid, to_dtype
from .tiling import TileGrid, fit_to_image, pad_to, tile_weights
from .tools import S2_BANDS

log = logging.getLogger("skyclear")

TileProcessor = Callable[[Dict[str, np.ndarray], List[Tuple[int, int]]], Dict[str, np.ndarray]]
BlockHook = Callable[[Dict[str, np.ndarray], Dict[str, np.ndarray], np.ndarray], Dict[str, np.ndarray]]
Progress = Callable[[float, str], None]

SKYCLEAR_VERSION = "0.3.3"
# GDAL block cache of a run. rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64, in
# bytes: a plain 128 meant 128 bytes, no cache, and every overlapping tile decoded its blocks again.
GDAL_CACHE_BYTES = 128 * 2 ** 20


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
    tiles_skipped: int = 0  # nodata in every pixel of the tile: not sent to the model


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


def to_network(raw: np.ndarray, valid: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """What the network sees: the card's scaling, and 0 wherever a pixel is not valid
    (nodata, NaN/inf, outside the SAR). The training loaders use it too, so a model is
    trained on exactly what inference will feed it."""
    data = preprocess(raw, spec)
    data[:, ~valid] = 0.0
    return data


def postprocess(net: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Network units -> raster values (float): x * scale + offset, clipped to the band range."""
    lo, hi, scale, offset = _band_arrays(spec)
    return np.clip(net * scale + offset, lo, hi)


# ---------------------------------------------------------------------------------------
# inputs


def resolve_bands(path: str, spec: TensorSpec, label: str, bands: Optional[Sequence[int]],
                  model_name: str) -> List[int]:
    """Which file bands feed ``spec``: the one band mapper of ``bands.py`` (explicit list,
    then descriptions and aliases, then grey R=G=B, then file order)."""
    from .bands import resolve_file_bands

    return resolve_file_bands(path, spec.band_names, label, bands, model_name)


def grid_input(card: ModelCard) -> TensorSpec:
    """The input that defines the output grid, dtype, nodata and extent: the optical one,
    whatever the order of the card's inputs."""
    return next((spec for spec in card.inputs if spec.role == "optical"), card.inputs[0])


def is_sentinel2(spec: TensorSpec) -> bool:
    """Whether an input takes Sentinel-2 bands (card band names B1..B12, B8A)."""
    return bool(spec.bands) and {n.upper() for n in spec.band_names} <= set(S2_BANDS)


def open_sources(card: ModelCard, paths: Dict[str, str],
                 band_lists: Optional[Dict[str, Sequence[int]]] = None,
                 labels: Optional[Dict[str, str]] = None, extent=None,
                 s2_zero_nodata: bool = False) -> Dict[str, RasterSource]:
    """Open every card input on the grid of the optical input (``grid_input``), cropped to
    ``extent`` (xmin, ymin, xmax, ymax in the optical CRS) when given.

    Checks band counts, dtypes, CRS and overlap before any work starts. ``s2_zero_nodata``
    (the Sentinel-2 tools): an optical Sentinel-2 raster that declares no nodata and no mask
    has its pixels that are 0 in every band read as nodata, as ESA's products mean them.
    """
    band_lists = band_lists or {}
    labels = labels or {}
    missing = [spec.name for spec in card.inputs if not paths.get(spec.name)]
    if missing:
        raise InputError(f"model '{card.name}' needs input(s) {missing}; none given")
    sources: Dict[str, RasterSource] = {}
    grid = None
    first = grid_input(card)
    try:
        for spec in [first] + [s for s in card.inputs if s is not first]:
            label = labels.get(spec.name, spec.name)
            path = paths[spec.name]
            bands = resolve_bands(path, spec, label, band_lists.get(spec.name), card.name)
            if grid is None and extent is not None:
                with RasterSource(path, bands, label) as whole:
                    grid = subgrid(whole.grid, extent)
            source = RasterSource(path, bands, label, grid=grid, resampling=spec.resampling)
            sources[spec.name] = source
            if s2_zero_nodata and spec is first and is_sentinel2(spec) and not source.declares_validity:
                source.zero_is_nodata = True
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


def _output_nodata(spec: TensorSpec, dtype: str, optical: RasterSource) -> Optional[float]:
    """A nodata value no valid output pixel can take, or None (validity then goes to a mask band).

    Floats use NaN. Integers prefer the optical nodata, then the card's, then the dtype's
    extremes, but only a value outside every band's output range: a valid pixel is never
    altered to make room for nodata. The writer declares it only once a pixel is invalid.
    """
    if np.issubdtype(np.dtype(dtype), np.floating):
        return float("nan")
    info = np.iinfo(dtype)
    lows = [b.clip[0] if b.clip else info.min for b in spec.bands]
    highs = [b.clip[1] if b.clip else info.max for b in spec.bands]

    def free(value) -> bool:
        return value is not None and info.min <= value <= info.max and (value < min(lows) or value > max(highs))

    same_dtype = optical.nodata is not None and dtype == optical.dtype
    for value in (optical.nodata if same_dtype else None, spec.nodata, info.max, info.min):
        if free(value):
            return float(value)
    return None


VALUE_RANGE_TAG = "SKYCLEAR_VALUE_RANGE"


def _value_range_tag(spec: TensorSpec) -> Dict[str, str]:
    """VALUE_RANGE_TAG="low,high" when every band of an output is clipped to one range: how QGIS
    styling tells a 0-1 probability from a 0-100 one without reading the whole band."""
    clips = {tuple(b.clip) if b.clip else None for b in spec.bands}
    if len(clips) != 1 or None in clips:
        return {}
    low, high = clips.pop()
    return {VALUE_RANGE_TAG: f"{low:g},{high:g}"}


def resolve_tiling(card: ModelCard, tile_size: Optional[int] = None, overlap: Optional[int] = None) -> Tuple[int, int]:
    """(tile, overlap) a run uses: the card's defaults for None; raises ``InputError`` for a
    tile that is not a multiple of the card's, or an overlap not smaller than the tile."""
    tile = tile_size or card.tile_size
    if tile % card.size_multiple:
        raise InputError(f"tile size {tile} must be a multiple of {card.size_multiple} for model '{card.name}'")
    ov = card.default_overlap if overlap is None else overlap
    if overlap is None and ov >= tile:
        ov = tile // 2        # only the tile size was chosen: keep the run possible, less seamless
    if not 0 <= ov < tile:
        raise InputError(f"overlap {ov} must be smaller than the tile size {tile} (and at least 0)")
    return tile, ov


def run_tiled(card: ModelCard, sources: Dict[str, RasterSource], processor: TileProcessor,
              outputs: Dict[str, str], tile_size: Optional[int] = None, overlap: Optional[int] = None,
              batch_size: int = 4, provider: str = "", progress: Optional[Progress] = None,
              is_cancelled: Optional[Callable[[], bool]] = None, block_hook: Optional[BlockHook] = None,
              extra_tags: Optional[Dict[str, str]] = None, compression: str = "deflate",
              tile_rows: Optional[Tuple[int, Optional[int]]] = None) -> RunReport:
    """Run ``processor`` over the whole grid and write the card outputs named in ``outputs``.

    ``block_hook(outputs_raw, inputs_raw, valid)`` may rewrite each finished block in raster
    units (e.g. to keep clear input pixels); it receives the raw input blocks on the grid.
    On any error or cancel, every output is removed and nothing else is left behind.
    ``tile_rows`` (or ``run_options``) makes the outputs one row band of the scene (see there).
    """
    started = time.time()
    scoped = _RUN_OPTIONS.get() or {}
    tile_rows = scoped.get("tile_rows") if tile_rows is None else tile_rows
    extra_tags = dict(extra_tags or {}, **scoped.get("tags", {}))
    tile, ov = resolve_tiling(card, tile_size, overlap)
    if overlap is None and ov != card.default_overlap:
        log.warning("tile size %d is not larger than model '%s''s overlap %d: using overlap %d; "
                    "a tile size above %d keeps tiles seamless", tile, card.name, card.default_overlap, ov,
                    card.default_overlap)
    optical = sources[grid_input(card).name]
    grid_def = optical.grid
    fixed = getattr(processor, "static_tile", None)
    if fixed and tile != fixed:
        raise InputError(f"model '{card.name}' takes tiles of exactly {fixed} px (its graph has fixed input "
                         f"sizes); tile size {tile} cannot be used")
    # an image smaller than the tile gets one tile of its own size, unless the graph is fixed
    grid = TileGrid(grid_def.height, grid_def.width, *((tile, ov) if fixed else fit_to_image(
        tile, ov, grid_def.height, grid_def.width, card.size_multiple)))
    part = _part_rows(grid, tile_rows)
    out_grid = grid_def if part is None else dataclasses.replace(
        grid_def, transform=grid_def.transform * rasterio.Affine.translation(0, part[2]), height=part[3] - part[2])
    unknown = sorted(set(outputs) - {o.name for o in card.outputs})
    if unknown:
        raise InputError(f"model '{card.name}' has no output(s) {unknown}")
    atomic.check_output_paths([(f"output '{n}'", p) for n, p in outputs.items()],
                              [(s.label, s.path) for s in sources.values()])

    tags = {
        "SKYCLEAR_VERSION": SKYCLEAR_VERSION, "SKYCLEAR_MODEL": card.name,
        "SKYCLEAR_MODEL_VERSION": card.version, "SKYCLEAR_MODEL_TASK": card.task,
        "SKYCLEAR_CARD_SHA256": card.sha256, "SKYCLEAR_PROVIDER": provider,
        "SKYCLEAR_TILE_SIZE": str(tile), "SKYCLEAR_OVERLAP": str(ov),
        "SKYCLEAR_INPUTS": json.dumps({n: {"path": os.path.abspath(s.path), "bands": s.bands}
                                       for n, s in sources.items()}),
    }
    tags.update(extra_tags or {})
    if part is not None:
        tags["SKYCLEAR_PART"] = json.dumps({"tile_rows": part[:2], "rows": part[2:], "height": grid.height})
    block = output_block_size(grid.stride)
    _return_large_buffers_to_the_os()
    writers: Dict[str, _Output] = {}
    try:
        for name, path in outputs.items():
            spec = card.output(name)
            dtype = spec.dtype or optical.dtype
            nodata = _output_nodata(spec, dtype, optical)
            writer = GeoTiffWriter(path, out_grid, len(spec.bands), dtype, nodata, spec.band_names,
                                   dict(tags, SKYCLEAR_OUTPUT=name, **_value_range_tag(spec)), block,
                                   use_mask=nodata is None, compression=compression)
            writers[name] = _Output(spec, writer, dtype, nodata)
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, GDAL_TIFF_INTERNAL_MASK=True, GDAL_NUM_THREADS=gdal_threads()):
            stats = _stream(card, sources, processor, writers, grid, batch_size, progress,
                            is_cancelled, block_hook, part)
            if part is None and stats["valid"] == 0:
                raise InputError(_no_valid_pixel(card, sources, stats["with_data"]))
            elapsed = time.time() - started
            for out in writers.values():
                out.writer.update_tags(SKYCLEAR_SECONDS=f"{elapsed:.2f}")
                out.writer.finish()
        if is_cancelled and is_cancelled():
            raise Cancelled("cancelled by the user; no output was written")
        atomic.commit([(out.writer.tmp_path, out.writer.path) for out in writers.values()])
        written = {name: out.writer.path for name, out in writers.items()}
    except BaseException:
        for out in writers.values():
            out.writer.abort()
        raise
    return RunReport(outputs=written, provider=provider, tile_size=grid.tile, overlap=grid.overlap, tiles=len(grid),
                     seconds=time.time() - started, processor_seconds=stats["processor_seconds"],
                     valid_fraction=stats["valid"] / max(1, out_grid.height * grid.width),
                     tiles_skipped=stats["skipped"])


# ---------------------------------------------------------------------------------------
# row bands: one scene split across processes (skyclear.batch)

_RUN_OPTIONS = contextvars.ContextVar("skyclear_run_options", default=None)


@contextlib.contextmanager
def run_options(*, tile_rows: Optional[Tuple[int, Optional[int]]] = None, tags: Optional[Dict[str, str]] = None):
    """Within this block, every ``run_tiled`` call (however reached, e.g. through ``jobs``)
    takes these options: a context rather than a parameter, so no job function changes.

    ``tile_rows=(first, stop)`` (``stop`` None: to the last row): compute tile rows
    [first, stop) plus the rows above whose overlap reaches them, and write outputs that
    cover only the pixel rows those tile rows finish, tagged ``SKYCLEAR_PART``. Blending
    is the whole-scene run's, operation for operation, so consecutive parts stacked are
    the whole-scene output value for value. ``tags`` are added to every output.
    """
    token = _RUN_OPTIONS.set({"tile_rows": tile_rows, "tags": dict(tags or {})})
    try:
        yield
    finally:
        _RUN_OPTIONS.reset(token)


def _part_rows(grid: TileGrid, tile_rows) -> Optional[Tuple[int, int, int, int]]:
    """(first, stop) tile rows and the [y0, y1) pixel rows they finish, or None for the whole grid."""
    if tile_rows is None:
        return None
    first, stop = tile_rows
    stop = grid.rows if stop is None else stop
    if not 0 <= first < stop <= grid.rows:
        raise InputError(f"tile rows {first}-{stop} are outside the scene's {grid.rows} tile rows")
    return first, stop, first * grid.stride, grid.finished_span(stop - 1, grid.rows, grid.height)[1]


def _no_valid_pixel(card: ModelCard, sources: Dict[str, RasterSource], with_data: Dict[str, bool]) -> str:
    """Why a run whose every output pixel would be nodata is refused: the inputs without a
    single valid pixel on the grid, else inputs whose valid areas never meet."""
    def name(spec):
        return f"{sources[spec.name].label}: {os.path.basename(sources[spec.name].path)}"

    empty = [spec for spec in card.inputs if not with_data.get(spec.name)]
    if empty:
        what = "; ".join(name(spec) for spec in empty)
        return (f"{what} has no valid pixel in the area processed (every pixel is nodata or NaN), so the "
                "output would be empty; nothing was written. Check the file, its nodata value and the extent")
    return (f"the inputs ({', '.join(name(spec) for spec in card.inputs)}) have no valid pixel in common (where "
            "one has data the other is nodata or NaN), so the output would be empty; nothing was written")


def _read_tile(sources: Dict[str, RasterSource], card: ModelCard, grid: TileGrid, y0: int, x0: int,
               keep_raw: bool = False, with_data: Optional[Dict[str, bool]] = None):
    """Network-ready inputs for one tile, reflect-padded past the scene edge, validity, and
    (``keep_raw``, for a block hook) the raster values as read. ``with_data`` records which
    inputs had any valid pixel."""
    h = min(grid.tile, grid.height - y0)
    w = min(grid.tile, grid.width - x0)
    window = Window(x0, y0, w, h)
    valid = np.ones((h, w), bool)
    raw = {}
    for spec in card.inputs:
        data, ok = sources[spec.name].read(window)
        if with_data is not None and not with_data.get(spec.name):
            with_data[spec.name] = bool(ok.any())
        valid &= ok
        raw[spec.name] = data
    tensors = {spec.name: pad_to(to_network(raw[spec.name], valid, spec), grid.tile, grid.tile)
               for spec in card.inputs}
    return tensors, valid, (raw if keep_raw else None)


def _batches(grid: TileGrid, batch_size: int, first: int = 0, stop: Optional[int] = None):
    """[(row, col), ...] per batch, in row-major order across tile rows: every batch but the
    last has the same size (the model gets fewer tiles where some hold only nodata), so
    onnxruntime's memory arena grows to one full batch once and is then reused."""
    tiles = [(r, c) for r in range(first, grid.rows if stop is None else stop) for c in range(grid.cols)]
    for i in range(0, len(tiles), batch_size):
        yield tiles[i:i + batch_size]


def _stream(card, sources, processor, writers, grid: TileGrid, batch_size, progress, is_cancelled, block_hook,
            part=None):
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
    # a part (see run_options) starts ceil(O / S) tile rows early: those rows' overlap reaches its first row.
    # It runs the whole-scene batches that hold its tiles, so every tile sees the same batch as there.
    first, stop, y_shift = (0, grid.rows, 0) if part is None else part[:3]
    warm = max(0, first - -(-O // S))
    batches = [b for b in _batches(grid, batch_size) if b[-1][0] >= warm and b[0][0] < stop]
    total = (stop - first) * grid.cols
    done, processor_seconds, valid_pixels, skipped = 0, 0.0, 0, 0
    with_data: Dict[str, bool] = {}

    def load(tiles):
        return [_read_tile(sources, card, grid, r * S, c * S, keep_raw=block_hook is not None, with_data=with_data)
                for r, c in tiles]

    # a part's first batch may start mid-row
    right = {n: np.zeros((ch, T, O), np.float32) for n, ch in channels.items()}
    right_w = np.zeros((T, O), np.float32)
    with ThreadPoolExecutor(1, "skyclear-io") as io:
        upcoming = io.submit(load, batches[0])
        writes = deque()
        for k, positions in enumerate(batches):
            if is_cancelled and is_cancelled():
                raise Cancelled("cancelled by the user; no output was written")
            tiles = upcoming.result()
            if k + 1 < len(batches):
                upcoming = io.submit(load, batches[k + 1])
            # a tile with nodata in every pixel (overlaps included) is written as nodata: no model call
            with_pixels = [i for i, t in enumerate(tiles) if t[1].any()]
            result_row = {tile: row for row, tile in enumerate(with_pixels)}
            skipped += sum(1 for i, (r, _) in enumerate(positions) if i not in result_row and first <= r < stop)
            if with_pixels:
                batch = {spec.name: np.stack([tiles[i][0][spec.name] for i in with_pixels]).astype(
                    np.float32, copy=False) for spec in card.inputs}
                if progress and hasattr(processor, "report_within_batch"):  # e.g. per diffusion step
                    processor.report_within_batch = functools.partial(
                        _progress_within_batch, progress, done, len(positions), total)
                tick = time.time()
                result = processor(batch, [(positions[i][0] * S, positions[i][1] * S) for i in with_pixels])
                processor_seconds += time.time() - tick
            for i, (r, c) in enumerate(positions):
                y0, x0 = r * S, c * S
                height = grid.finished_span(r, grid.rows, grid.height)[1] - y0
                if c == 0:
                    right = {n: np.zeros((ch, T, O), np.float32) for n, ch in channels.items()}
                    right_w = np.zeros((T, O), np.float32)
                span = grid.finished_span(c, grid.cols, W)[1] - x0
                weights = tile_weights(grid, r, c)
                row = result_row.get(i)
                acc = {n: (np.asarray(result[n][row], np.float32) * weights if row is not None
                           else np.zeros((ch, T, T), np.float32)) for n, ch in channels.items()}
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
                if not first <= r < stop:
                    continue  # outside the part: only blended into its first rows, or not needed
                raw = {n: postprocess(acc[n][:, :height, :span] / wsum[:height, :span], out.spec)
                       for n, out in writers.items()}
                valid = tiles[i][1][:height, :span]
                if block_hook is not None:  # the block is the tile's top-left corner: its raw inputs are at hand
                    raw = block_hook(raw, {name: a[:, :height, :span] for name, a in tiles[i][2].items()}, valid)
                valid_pixels += int(valid.sum())
                writes.append(io.submit(_write_block, writers, raw, valid,
                                        Window(x0, y0 - y_shift, span, height)))
                while len(writes) > 2 * batch_size:
                    writes.popleft().result()
                done += 1
            if progress and positions[-1][0] >= first:
                progress(done / total, f"tile {done}/{total}")
        for pending in writes:
            pending.result()
    return {"processor_seconds": processor_seconds, "valid": valid_pixels, "with_data": with_data,
            "skipped": skipped}


def _progress_within_batch(progress: Progress, done: int, count: int, total: int, fraction: float) -> None:
    progress((done + fraction * count) / total, f"tiles {done + 1}-{done + count}/{total}: {fraction:.0%}")


def _write_block(writers, raw, valid, window):
    some_invalid = not valid.all()
    for out in writers.values():
        data = to_dtype(raw[out.spec.name], out.dtype)
        if some_invalid:
            data[:, ~valid] = 0 if out.nodata is None else out.nodata
            out.writer.mark_invalid()
        out.writer.write(data, window, valid)
