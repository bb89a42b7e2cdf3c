"""Raster input on a common grid, and atomic GeoTIFF output.

The optical input defines the output grid. Any other input on another CRS, resolution or
extent is read through a ``WarpedVRT`` onto that grid, window by window, so nothing is
ever held whole in memory. Inputs without a CRS are accepted only when they share the
optical raster's pixel grid (same size and transform).
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import rasterio
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from . import atomic
from .errors import InputError, OutputError

log = logging.getLogger("skyclear")


@dataclass(frozen=True)
class Grid:
    crs: Optional[rasterio.crs.CRS]
    transform: rasterio.Affine
    width: int
    height: int

    @property
    def bounds(self):
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)


def gdal_threads() -> str:
    """GDAL's worker threads for (de)compressing GeoTIFF blocks (measured on 2 cores, 4096² × 13
    bands uint16 DEFLATE: writing 3.10 -> 1.74 s, reading 2.71 -> 1.62 s). SKYCLEAR_GDAL_THREADS
    if set; else, where rasterio's GDAL is the only GDAL in the process, the cores SkyClear may use
    (SKYCLEAR_THREADS, as for onnxruntime) or all; else 1: inside QGIS, which brings its own GDAL,
    qgis_process deadlocked with worker threads on (measured), so there the I/O stays serial."""
    if os.environ.get("SKYCLEAR_GDAL_THREADS"):
        return os.environ["SKYCLEAR_GDAL_THREADS"]
    if _other_gdal_loaded():
        return "1"
    return os.environ.get("SKYCLEAR_THREADS") or "ALL_CPUS"


def _other_gdal_loaded() -> bool:
    """True when more than one GDAL library is mapped into this process, or when that cannot
    be told (no /proc: not Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            gdals = {os.path.basename(line.split()[-1]) for line in maps if "libgdal" in line}
    except OSError:
        return True
    return len(gdals) > 1


def _open(path: str, label: str):
    if not path:
        raise InputError(f"{label}: no raster given")
    if not os.path.exists(path):
        raise InputError(f"{label}: file not found: {path}")
    try:
        with warnings.catch_warnings(), rasterio.Env(GDAL_NUM_THREADS=gdal_threads()):  # read at open time
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{label}: {path} is not a raster GDAL can read ({exc})") from exc


def _pixel_offset(ds, grid: Grid) -> Optional[tuple]:
    """(row, col) of ``grid`` inside ``ds`` when it is a whole-pixel sub-grid of it, else None."""
    if ds.crs != grid.crs:
        return None
    a, t = ds.transform, grid.transform
    if not (a.b == t.b == 0 and a.d == t.d == 0):
        return None
    # Same pixel size to within 1/1000 pixel of drift across the whole grid, whatever the
    # units (a fixed absolute tolerance would accept degree grids that drift by pixels).
    span = max(grid.width, grid.height, ds.width, ds.height)
    if abs(a.a - t.a) * span > 1e-3 * abs(t.a) or abs(a.e - t.e) * span > 1e-3 * abs(t.e):
        return None
    col, row = ~a * (t.c, t.f)
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        return None
    row, col = int(round(row)), int(round(col))
    if row < 0 or col < 0 or row + grid.height > ds.height or col + grid.width > ds.width:
        return None
    return row, col


def boxes_overlap(a, b) -> bool:
    """Whether two (xmin, ymin, xmax, ymax) boxes share any area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


class RasterSource:
    """One input raster, a chosen list of bands, read by windows on the output grid.

    ``bands`` are 1-based band indexes of the file, in the order the model wants them.
    """

    def __init__(self, path: str, bands: Sequence[int], label: str,
                 grid: Optional[Grid] = None, resampling: str = "bilinear"):
        self.path = path
        self.label = label
        self.bands = list(bands)
        self.dataset = _open(path, label)
        self._reader = self.dataset
        self._alpha = False
        self._blocks: "OrderedDict[tuple, tuple]" = OrderedDict()   # warped blocks, see _read_warped
        self._keep_blocks = 0
        self.zero_is_nodata = False     # pixels 0 in every band are nodata (``engine.open_sources``)
        self._zero_said = False
        ds = self.dataset
        bad = [b for b in self.bands if not 1 <= b <= ds.count]
        if bad:
            self.close()
            raise InputError(f"{label}: band(s) {bad} do not exist in {os.path.basename(path)} "
                             f"(it has {ds.count} band(s))")
        self.grid = grid or Grid(ds.crs, ds.transform, ds.width, ds.height)
        self.offset = _pixel_offset(ds, self.grid)
        self.aligned = self.offset is None
        if self.aligned:
            try:
                self._reader = self._warp(Resampling[resampling])
            except InputError:
                self.close()
                raise

    def _warp(self, resampling: Resampling):
        ds, grid = self.dataset, self.grid
        if ds.crs is None or grid.crs is None:
            if (ds.width, ds.height) != (grid.width, grid.height):
                differ = f"the pixel grids differ ({ds.width}x{ds.height} vs {grid.width}x{grid.height})"
            else:   # same size: the georeference is what differs
                differ = f"the pixel grids differ (both {ds.width}x{ds.height}, but with different geotransforms)"
            raise InputError(
                f"{self.label}: {os.path.basename(self.path)} and the optical raster cannot be aligned: "
                f"{'it has' if ds.crs is None else 'the optical raster has'} no CRS and {differ}. "
                "Georeference both rasters, or give rasters with identical pixel grids")
        src_box = transform_bounds(ds.crs, grid.crs, *ds.bounds, densify_pts=21)
        if not boxes_overlap(src_box, grid.bounds):
            raise InputError(
                f"{self.label}: {os.path.basename(self.path)} does not overlap the optical raster "
                f"(its extent in {grid.crs.to_string()} is {tuple(round(v, 3) for v in src_box)}, "
                f"the area to process, the optical raster or the chosen extent, is "
                f"{tuple(round(v, 3) for v in grid.bounds)})")
        # Without a nodata value GDAL would mark pixels outside the source as valid zeros;
        # an alpha band records where the source really has data.
        # The VRT is read block by block (_read_warped), never by arbitrary windows.
        self._alpha = ds.nodata is None
        # A float raster without a nodata value (SAR in dB, often) marks its gaps with NaN:
        # as the warper's source nodata they are left out, instead of spreading one pixel
        # into the data through the bilinear/cubic kernel.
        nan_gaps = self._alpha and all(np.issubdtype(np.dtype(ds.dtypes[b - 1]), np.floating) for b in self.bands)
        extra = {"src_nodata": float("nan")} if nan_gaps else {}   # src_nodata=None would drop a nodata value
        return WarpedVRT(ds, crs=grid.crs, transform=grid.transform, width=grid.width,
                         height=grid.height, resampling=resampling, add_alpha=self._alpha, **extra)

    @property
    def dtype(self) -> str:
        return self.dataset.dtypes[self.bands[0] - 1]

    @property
    def nodata(self) -> Optional[float]:
        return self.dataset.nodata

    @property
    def count(self) -> int:
        return len(self.bands)

    @property
    def declares_validity(self) -> bool:
        """Whether the file says where it has no data (nodata value, mask or alpha band)."""
        flags = self.dataset.mask_flag_enums
        return any(flags[b - 1] != [MaskFlags.all_valid] for b in self.bands)

    def read(self, window: Window):
        """(float32 data (C, h, w), bool valid (h, w)) for a window inside the grid.

        A pixel is valid if any chosen band is (GDAL's dataset-mask rule), so a dark pixel
        that equals nodata in one band only is not thrown away.
        """
        if self.offset is not None:
            window = Window(window.col_off + self.offset[1], window.row_off + self.offset[0],
                            window.width, window.height)
        try:
            if self._reader is not self.dataset:
                data, valid = self._read_warped(window)
            else:
                data = self._reader.read(self.bands, window=window, out_dtype="float32")
                valid = self._reader.read_masks(self.bands, window=window).max(axis=0) > 0
        except rasterio.errors.RasterioError as exc:
            raise InputError(f"{self.label}: {self.path} could not be read at rows {window.row_off}-"
                             f"{window.row_off + window.height}, columns {window.col_off}-"
                             f"{window.col_off + window.width}: the file is damaged or truncated ({exc})") from exc
        if np.issubdtype(np.dtype(self.dtype), np.floating):
            # NaN/inf are never data, tagged as nodata or not
            valid &= np.isfinite(data).all(axis=0)
        if self.zero_is_nodata:
            blank = valid & ~data.any(axis=0)
            if blank.any():
                valid &= ~blank
                if not self._zero_said:
                    self._zero_said = True
                    log.warning("%s: %s declares no nodata; its pixels that are 0 in every band are taken as "
                                "nodata (the Sentinel-2 convention) and stay nodata in the output. Declare a "
                                "nodata value (gdal_edit.py -a_nodata) to have them read otherwise",
                                self.label, os.path.basename(self.path))
        data[:, ~valid] = 0.0
        return data, valid

    def _read_warped(self, window: Window):
        """(data, valid) of a window of the warped VRT, put together from whole VRT blocks,
        each warped once and kept while the tile rows in flight need it.

        Reading the window itself seams: GDAL warps a window over 512x512 pixels in one pass
        with its own approximate transformer, so overlapping tiles disagreed (by 0.005-0.02 dB,
        and on swath-edge validity). Whole blocks give every pixel one value whatever the tile
        size, warp the bands and their validity together, and do not depend on what else
        competes for GDAL's block cache (benchmarks/sar_warp.py). Memory: (block rows a window
        spans + 1) x blocks per row, whatever the scene's height.
        """
        bh, bw = self._reader.block_shapes[0]
        r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        rows = range(r0 // bh, (r0 + h - 1) // bh + 1)
        cols = range(c0 // bw, (c0 + w - 1) // bw + 1)
        self._keep_blocks = max(self._keep_blocks, (len(rows) + 1) * -(-self.grid.width // bw))
        data = np.empty((len(self.bands), h, w), np.float32)
        valid = np.empty((h, w), bool)
        for by in rows:
            for bx in cols:
                block_data, block_valid = self._warped_block(by, bx, bh, bw)
                y0, x0 = by * bh, bx * bw
                ys, ye = max(y0, r0), min(y0 + block_valid.shape[0], r0 + h)
                xs, xe = max(x0, c0), min(x0 + block_valid.shape[1], c0 + w)
                data[:, ys - r0:ye - r0, xs - c0:xe - c0] = block_data[:, ys - y0:ye - y0, xs - x0:xe - x0]
                valid[ys - r0:ye - r0, xs - c0:xe - c0] = block_valid[ys - y0:ye - y0, xs - x0:xe - x0]
        return data, valid

    def _warped_block(self, by: int, bx: int, bh: int, bw: int):
        key = (by, bx)
        if key in self._blocks:
            self._blocks.move_to_end(key)
            return self._blocks[key]
        grid = self.grid
        window = Window(bx * bw, by * bh, min(bw, grid.width - bx * bw), min(bh, grid.height - by * bh))
        if self._alpha:   # the bands and the alpha band in one warp
            raw = self._reader.read(self.bands + [self._reader.count], window=window)
            valid = raw[-1] > 0
            raw = raw[:-1].copy()     # not a view that keeps the alpha band alive
        else:             # GDAL's nodata mask rule, from the values: valid where any band is not nodata
            raw = self._reader.read(self.bands, window=window)
            valid = np.zeros(raw.shape[1:], bool)
            for band, values in zip(self.bands, raw):
                nodata = self._reader.nodatavals[band - 1]
                limits = _dtype_range(values.dtype)
                if nodata is None:
                    valid[:] = True
                elif np.isnan(nodata):
                    valid |= ~np.isnan(values)
                elif limits and not (float(nodata).is_integer() and limits[0] <= nodata <= limits[1]):
                    valid[:] = True    # a nodata value the band cannot hold matches nothing
                else:
                    valid |= values != np.asarray(nodata).astype(values.dtype)
        block = (raw.astype(np.float32, copy=False), valid)
        self._blocks[key] = block
        while len(self._blocks) > self._keep_blocks:
            self._blocks.popitem(last=False)
        return block

    def close(self) -> None:
        self._blocks.clear()
        if self._reader is None:
            return
        if self._reader is not self.dataset:
            self._reader.close()
        self.dataset.close()
        self._reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def subgrid(grid: Grid, extent) -> Grid:
    """The whole-pixel part of ``grid`` inside ``extent`` = (xmin, ymin, xmax, ymax) in its CRS."""
    xmin, ymin, xmax, ymax = extent
    # pixel coordinates of the four corners: works for north-up and for non-georeferenced
    # (identity, y down) transforms alike
    corners = [~grid.transform * (x, y) for x in (xmin, xmax) for y in (ymin, ymax)]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    row0, col0 = max(0, int(np.floor(min(rows)))), max(0, int(np.floor(min(cols))))
    row1, col1 = min(grid.height, int(np.ceil(max(rows)))), min(grid.width, int(np.ceil(max(cols))))
    if row1 <= row0 or col1 <= col0:
        raise InputError(f"the chosen extent {tuple(extent)} does not overlap the optical raster "
                         f"(extent {tuple(round(v, 3) for v in grid.bounds)})")
    window = Window(col0, row0, col1 - col0, row1 - row0)
    return Grid(grid.crs, rasterio.windows.transform(window, grid.transform), col1 - col0, row1 - row0)


def describe_raster(path: str) -> Dict:
    """Band count, dtype, descriptions, CRS, dataset tags: what band mapping, validation and styling need."""
    with _open(path, "raster") as ds:
        return {"count": ds.count, "dtype": ds.dtypes[0], "descriptions": list(ds.descriptions),
                "crs": ds.crs, "width": ds.width, "height": ds.height, "nodata": ds.nodata, "tags": ds.tags()}


# ---------------------------------------------------------------------------------------
# output


def _dtype_range(dtype: str):
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return None


def to_dtype(data: np.ndarray, dtype: str) -> np.ndarray:
    """Round and clip to an integer dtype's range; plain cast for floats."""
    limits = _dtype_range(dtype)
    if limits is None:
        return data.astype(dtype)
    return np.clip(np.rint(data), *limits).astype(dtype)


# Output compression, by measurement on 2 cores (benchmarks/engine.py --compression): DEFLATE
# level 1 (the default: every GIS reads it) costs ~4.5x the CPU of ZSTD level 1 at the same
# size; "none" is fastest and twice the size.
COMPRESSIONS = {
    "deflate": lambda integer: dict(compress="deflate", zlevel=1, predictor=2 if integer else 3,
                                    num_threads=gdal_threads()),
    "zstd": lambda integer: dict(compress="zstd", zstd_level=1, predictor=2 if integer else 3,
                                 num_threads=gdal_threads()),
    "none": lambda integer: {},
}


GEOTIFF_EXTENSIONS = ("", ".tif", ".tiff")


def output_format_problem(path: str) -> Optional[str]:
    """Outputs are GeoTIFF: a name ending in another format's extension (.png, .jpg, .img)
    would hold GeoTIFF bytes that other software misreads."""
    ext = os.path.splitext(path)[1]
    if ext.lower() in GEOTIFF_EXTENSIONS:
        return None
    return (f"output {path}: SkyClear writes GeoTIFF, not {ext.lstrip('.').upper()}; give a .tif name "
            f"such as {os.path.splitext(path)[0]}.tif")


class GeoTiffWriter:
    """A tiled, compressed (``COMPRESSIONS``) GeoTIFF written to a hidden temporary file.

    ``finish()`` closes and reads the file back (every block present and inside the file),
    so a full disk or a failed flush is an error rather than a broken output; the run then
    moves all its finished files into place with ``atomic.commit``. ``abort()`` removes the
    temporary file. Until the commit, whatever was at the final path is untouched.

    ``nodata`` is declared only once an invalid pixel is written (``mark_invalid``); with
    ``use_mask`` validity goes into an internal mask band instead, for integer outputs
    whose every value is a possible result.
    """

    def __init__(self, path: str, grid: Grid, count: int, dtype: str, nodata: Optional[float],
                 descriptions: Sequence[str], tags: Dict[str, str], block: int, use_mask: bool = False,
                 compression: str = "deflate"):
        self.path = os.path.abspath(path)
        folder = os.path.dirname(self.path)
        if os.path.isdir(self.path):
            raise InputError(f"output {self.path} is a folder; give a file name such as {self.path}/result.tif")
        if not os.path.isdir(folder):
            raise InputError(f"output folder does not exist: {folder}")
        problem = output_format_problem(self.path)
        if problem:
            raise InputError(problem)
        if not os.access(folder, os.W_OK):
            raise InputError(f"output folder is not writable: {folder}")
        atomic.sweep_stale(folder)
        self.tmp_path = atomic.temp_path(self.path)
        self.dtype = dtype
        self.nodata = nodata
        self.use_mask = use_mask
        self.has_invalid = False
        if compression not in COMPRESSIONS:
            raise InputError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
        integer = np.issubdtype(np.dtype(dtype), np.integer)
        profile = dict(
            driver="GTiff", width=grid.width, height=grid.height, count=count, dtype=dtype,
            crs=grid.crs, transform=grid.transform, tiled=True,
            blockxsize=block, blockysize=block, interleave="band", BIGTIFF="IF_SAFER",
            **COMPRESSIONS[compression](integer),
        )
        if grid.crs is None and grid.transform == rasterio.Affine.identity():
            # a non-georeferenced input: write none either, or GIS software flips the y axis
            del profile["crs"], profile["transform"]
        atomic.register(self.tmp_path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._ds = rasterio.open(self.tmp_path, "w", **profile)
            for i, text in enumerate(descriptions, start=1):
                self._ds.set_band_description(i, text)
            self._ds.update_tags(**tags)
        except rasterio.errors.RasterioError as exc:
            atomic.remove(self.tmp_path)
            raise InputError(f"cannot write {self.path}: {exc}") from exc

    def write(self, data: np.ndarray, window: Window, valid: Optional[np.ndarray] = None) -> None:
        try:
            self._ds.write(data, window=window)
            if self.use_mask:
                self._ds.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=window)
        except rasterio.errors.RasterioError as exc:
            raise OutputError(f"writing {self.path} failed ({_gdal_reason(exc)}); nothing was written") from exc

    def mark_invalid(self) -> None:
        """Declare nodata (from the first invalid pixel on; deleting it later would push the
        band descriptions out of the TIFF into an .aux.xml)."""
        if not self.has_invalid and not self.use_mask and self.nodata is not None:
            self._ds.nodata = self.nodata
        self.has_invalid = True

    def update_tags(self, **tags: str) -> None:
        self._ds.update_tags(**tags)

    def finish(self) -> None:
        """Close the file and check that it is complete on disk."""
        try:
            self._ds.close()
        except rasterio.errors.RasterioError as exc:
            raise OutputError(f"writing {self.path} failed ({_gdal_reason(exc)}); nothing was written") from exc
        problem = verify_geotiff(self.tmp_path)
        if problem:
            raise OutputError(f"writing {self.path} failed: {problem} (is the disk full?); nothing was written")

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if not self._ds.closed:
                self._ds.close()
        atomic.remove(self.tmp_path)


def _gdal_reason(exc: Exception) -> str:
    """GDAL's own words ("No space left on device") are in the chained CPLE error, if any."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text


def verify_geotiff(path: str) -> Optional[str]:
    """None when the tiled GeoTIFF at ``path`` opens and every block of every band lies
    inside the file; else what is wrong. Cheap: reads the block index, and decodes only
    the last block of each band."""
    try:
        size = os.path.getsize(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                bw, bh = ds.block_shapes[0][1], ds.block_shapes[0][0]
                cols, rows = -(-ds.width // bw), -(-ds.height // bh)
                for b in range(1, ds.count + 1):
                    for r in range(rows):
                        for c in range(cols):
                            off = ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=b)
                            length = ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=b)
                            if not off or not length or int(off) + int(length) > size:
                                return f"block ({r}, {c}) of band {b} is missing"
                    ds.read(b, window=Window((cols - 1) * bw, (rows - 1) * bh,
                                             ds.width - (cols - 1) * bw, ds.height - (rows - 1) * bh))
    except (rasterio.errors.RasterioError, OSError) as exc:
        return f"the written file cannot be read back ({exc})"
    return None


def output_block_size(stride: int) -> int:
    """GeoTIFF tile size: the tile stride when GeoTIFF allows it, so each finished block is
    written exactly once; otherwise 256 (GDAL's cache then completes partial blocks)."""
    return stride if stride % 16 == 0 and 16 <= stride <= 2048 else 256
