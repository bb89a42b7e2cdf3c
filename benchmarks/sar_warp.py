"""SAR on another grid: does the engine's warped read (a WarpedVRT onto the optical grid, read
tile window by tile window) cost time, grow memory or leave seams?

    python benchmarks/sar_warp.py [--sizes 4096 2048] [--repeats 2] [--workdir /tmp/sarwarp]

Per size, a 13-band uint16 Sentinel-2-like scene (EPSG:32633, 10 m; ``benchmarks/engine.py``'s
synthetic scene, shared through ``--cache``) and SAR made for it: VV, VH float32 dB, smooth
structure (sinusoids of 0.1-5 km, so a seam would show), NaN and nodata=NaN beyond a diagonal
swath edge. That SAR is reprojected (bilinear) to EPSG:4326 (~10 m) and to EPSG:32632 at 20 m:
the files an analyst would have. Each of these is then warped back onto the optical grid once,
whole scene, bilinear, exact transform: the "pre-warped" reference.

Cases, each ``remove_clouds_sar`` (bundled IB-HFN, CPU, card tiling) in a fresh process under
``/usr/bin/time`` (wall, user+sys, max RSS):

- ``co-registered <crs>``: the pre-warped SAR; the engine reads it without warping;
- ``warped <crs>``: the SAR in <crs>; the engine warps it per tile.

The diff columns compare the warped run's restored image (DN) with the co-registered run's,
over pixels valid in both, overall, in the tile-border bands (the overlap strips plus 2 px),
in tile interiors, and away from the swath edge (where a per-block warp and the whole-scene
warp may disagree on a pixel's validity, and the model sees that). The second table looks at
the SAR itself as the engine reads it (``RasterSource.read`` on the engine's tile windows, at
the card's tile size and at ``--read-tiles``) against the pre-warped reference, and at how
much two tiles disagree about the same pixel (0 = no seam can come from the read).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAR_CRS = {"4326": ("EPSG:4326", None), "32632": ("EPSG:32632", 20.0)}
MARGIN = 2   # px either side of the overlap strips that count as "tile border"
EDGE = 32    # px from a pixel invalid in either output that count as "at the swath edge"


# --------------------------------------------------------------------------------- building


def synthetic_sar(n: int, x0: int = 0, y0: int = 0, h: int = None, w: int = None):
    """VV, VH in dB on the optical grid's pixels [y0:y0+h, x0:x0+w]: smooth fields, NaN beyond
    a diagonal swath edge (about 9 % of the scene)."""
    import numpy as np

    h, w = h or n, w or n
    yy, xx = np.mgrid[y0:y0 + h, x0:x0 + w].astype(np.float32)
    x, y = xx * 10.0, yy * 10.0    # metres
    vv = -12 + 4 * np.sin(x / 830) * np.cos(y / 1170) + 2 * np.sin((x + y) / 310) + np.cos(x / 97 - y / 143)
    vh = vv - 7 + 1.5 * np.sin(y / 410)
    sar = np.stack([vv, vh]).astype(np.float32)
    sar[:, xx + 0.3 * yy > 1.05 * n] = np.nan
    return sar


def build(size: int, workdir: Path, cache: Path) -> dict:
    """The optical scene, the SAR in each CRS and its pre-warped copy (skipped when present)."""
    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import calculate_default_transform, reproject

    sys.path.insert(0, str(HERE))
    from engine import synthetic_scene

    cache.mkdir(parents=True, exist_ok=True)
    optical = synthetic_scene(cache / f"scene_{size}.tif", size)
    with rasterio.open(optical) as ds:
        crs, transform, n = ds.crs, ds.transform, ds.width
        assert ds.crs.to_epsg() == 32633 and ds.width == ds.height == size and ds.res == (10.0, 10.0), \
            f"{optical}: expected {size}² EPSG:32633 at 10 m"
    files = {"optical": str(optical)}
    profile = dict(driver="GTiff", count=2, dtype="float32", tiled=True, compress="deflate", predictor=3,
                   nodata=float("nan"))
    sar = None
    for name, (dst_crs, res) in SAR_CRS.items():
        moved = workdir / f"sar_{size}_{name}.tif"
        ref = workdir / f"sar_{size}_{name}_prewarped.tif"
        if not moved.exists():
            sar = synthetic_sar(n) if sar is None else sar
            bounds = rasterio.transform.array_bounds(n, n, transform)
            t, w, h = calculate_default_transform(crs, dst_crs, n, n, *bounds, resolution=res)
            out = np.full((2, h, w), np.nan, np.float32)
            reproject(sar, out, src_transform=transform, src_crs=crs, src_nodata=np.nan, dst_transform=t,
                      dst_crs=dst_crs, dst_nodata=np.nan, resampling=Resampling.bilinear, tolerance=0)
            with rasterio.open(moved, "w", **profile, crs=dst_crs, transform=t, width=w, height=h) as dst:
                dst.write(out)
            del out
        if not ref.exists():
            out = np.full((2, n, n), np.nan, np.float32)
            with rasterio.open(moved) as src:
                reproject(rasterio.band(src, [1, 2]), out, dst_transform=transform, dst_crs=crs,
                          dst_nodata=np.nan, resampling=Resampling.bilinear, tolerance=0, warp_mem_limit=4096)
            with rasterio.open(ref, "w", **profile, crs=crs, transform=transform, width=n, height=n) as dst:
                dst.write(out)
            del out
        files[name] = str(moved)
        files[name + "_prewarped"] = str(ref)
    return files


# --------------------------------------------------------------------------------- children


def own_peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_job(optical: str, sar: str, out: str) -> dict:
    from skyclear.plugin.core import jobs

    report = jobs.remove_clouds_sar(optical=optical, sar=sar, output=out, device="cpu")
    return {"seconds": report.seconds, "model_seconds": report.processor_seconds,
            "tile": report.tile_size, "overlap": report.overlap, "vmhwm_mb": own_peak_rss_mb(),
            "outputs": report.outputs}


def border_mask(n: int, stride: int, overlap: int):
    """True on rows/columns in the overlap strips [k*S, k*S + O) widened by MARGIN."""
    import numpy as np

    pos = np.arange(n) % stride
    line = (pos < overlap + MARGIN) | (pos >= stride - MARGIN)
    line[:MARGIN] = False   # the scene edge is no tile border
    return line[:, None] | line[None, :]


def diff_outputs(test: str, ref: str, stride: int, overlap: int) -> dict:
    """|test - ref| over pixels valid in both, overall / tile borders / interiors / farther
    than EDGE px from any pixel invalid in either (the swath edge, where the two warps may
    disagree on validity by a pixel and the model sees that)."""
    import numpy as np
    import rasterio
    from scipy.ndimage import distance_transform_edt

    with rasterio.open(test) as a, rasterio.open(ref) as b:
        x, y = a.read(masked=True), b.read(masked=True)
    valid_x, valid_y = ~np.ma.getmaskarray(x).any(0), ~np.ma.getmaskarray(y).any(0)
    both = valid_x & valid_y
    d = np.abs(x.data.astype(np.float64) - y.data.astype(np.float64)).max(axis=0)
    border = border_mask(d.shape[0], stride, overlap)
    away = distance_transform_edt(both) > EDGE
    result = {"mismatched_valid": int((valid_x != valid_y).sum())}
    for key, sel in (("all", both), ("border", both & border), ("interior", both & ~border),
                     ("away", both & away), ("away_border", both & away & border)):
        result[key] = (float(d[sel].max()), float(d[sel].mean())) if sel.any() else (float("nan"),) * 2
    return result


def sar_reads(optical: str, sar: str, ref: str, tile: int, overlap: int) -> dict:
    """The SAR as the engine reads it, tile window by tile window, against the pre-warped
    reference; and the largest disagreement between two tiles about one pixel."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from skyclear.plugin.core.engine import GDAL_CACHE_BYTES
    from skyclear.plugin.core.raster_io import Grid, RasterSource
    from skyclear.plugin.core.tiling import TileGrid

    with rasterio.open(optical) as ds:
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    with rasterio.open(ref) as ds:
        truth = ds.read()
    n = grid.width
    tg = TileGrid(grid.height, grid.width, tile, overlap)
    seen = np.full(truth.shape, np.nan, np.float32)
    seen_valid = np.zeros((n, n), np.int8)    # 0 unseen, 1 valid, 2 invalid
    worst = {"vs_ref": 0.0, "vs_ref_sum": 0.0, "count": 0, "between_tiles": 0.0, "valid_flips": 0,
             "mismatched_valid": 0}
    border = border_mask(n, tg.stride, overlap)
    per_class = {"border": [0.0, 0.0, 0], "interior": [0.0, 0.0, 0]}
    cpu = 0.0
    # the GDAL settings the engine reads under (run_tiled)
    with RasterSource(sar, [1, 2], "SAR", grid=grid) as src, rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES):
        for r in range(tg.rows):
            for c in range(tg.cols):
                y0, x0 = r * tg.stride, c * tg.stride
                h, w = min(tile, n - y0), min(tile, n - x0)
                tick = time.process_time()
                data, valid = src.read(Window(x0, y0, w, h))
                cpu += time.process_time() - tick
                t = truth[:, y0:y0 + h, x0:x0 + w]
                t_valid = np.isfinite(t).all(0)
                worst["mismatched_valid"] += int((valid != t_valid).sum())
                both = valid & t_valid
                d = np.abs(data - t).max(0)
                if both.any():
                    worst["vs_ref"] = max(worst["vs_ref"], float(d[both].max()))
                    worst["vs_ref_sum"] += float(d[both].sum())
                    worst["count"] += int(both.sum())
                    b = border[y0:y0 + h, x0:x0 + w]
                    for key, sel in (("border", both & b), ("interior", both & ~b)):
                        if sel.any():
                            acc = per_class[key]
                            acc[0] = max(acc[0], float(d[sel].max()))
                            acc[1] += float(d[sel].sum())
                            acc[2] += int(sel.sum())
                prev, prev_valid = seen[:, y0:y0 + h, x0:x0 + w], seen_valid[y0:y0 + h, x0:x0 + w]
                code = np.where(valid, 1, 2).astype(np.int8)
                again = prev_valid > 0
                worst["valid_flips"] += int((again & (prev_valid != code)).sum())
                agree = again & (prev_valid == 1) & valid
                if agree.any():
                    worst["between_tiles"] = max(worst["between_tiles"], float(np.abs(prev - data).max(0)[agree].max()))
                prev[:, ~again] = data[:, ~again]
                prev_valid[~again] = code[~again]
    return {"max": worst["vs_ref"], "mean": worst["vs_ref_sum"] / max(worst["count"], 1),
            "border": (per_class["border"][0], per_class["border"][1] / max(per_class["border"][2], 1)),
            "interior": (per_class["interior"][0], per_class["interior"][1] / max(per_class["interior"][2], 1)),
            "between_tiles": worst["between_tiles"], "valid_flips": worst["valid_flips"],
            "mismatched_valid": worst["mismatched_valid"], "read_cpu_s": cpu, "tiles": len(tg)}


# --------------------------------------------------------------------------------- parent


def child(args, *extra) -> dict:
    """Run a --child step in a fresh process under /usr/bin/time; its JSON result plus wall,
    CPU (user+sys) and max RSS as /usr/bin/time saw them."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        cmd = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", tf.name, sys.executable, __file__, "--child", *args, *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        wall, user, system, rss_kb = tf.read().split()[-4:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(wall=float(wall), cpu=float(user) + float(system), rss_mb=int(rss_kb) / 1024.0)
    result["cmd"] = " ".join(cmd[6:])
    return result


def fmt_pair(pair, digits=1) -> str:
    return f"{pair[0]:.{digits}f} / {pair[1]:.{digits + 2}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 2048])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sar", nargs="+", default=list(SAR_CRS), choices=list(SAR_CRS),
                        help="SAR CRS cases (EPSG codes)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sarwarp"))
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "skyclear-bench"),
                        help="where benchmarks/engine.py keeps its synthetic scenes (reused)")
    parser.add_argument("--read-tiles", type=int, nargs="*", default=[1024],
                        help="also read the SAR with these tile sizes (overlap 64) for the second table: "
                             "GDAL warps windows over 512x512 px differently")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, *rest = args.child
        if step == "build":
            out = build(int(rest[0]), Path(rest[1]), Path(rest[2]))
        elif step == "run":
            out = run_job(*rest)
        elif step == "diff":
            out = diff_outputs(rest[0], rest[1], int(rest[2]), int(rest[3]))
        else:
            out = sar_reads(rest[0], rest[1], rest[2], int(rest[3]), int(rest[4]))
        print(json.dumps(out))
        return

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"remove_clouds_sar, bundled IB-HFN, CPU, {os.cpu_count()} cores, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; each run a fresh process under /usr/bin/time; "
          f"{args.repeats} repeat(s), best CPU shown (all runs listed below the tables)\n")
    rows, reads, runs_log = [], [], []
    for size in args.sizes:
        files = child(["build", str(size), str(workdir), args.cache])
        for name in args.sar:
            outs = {}
            for label, sar in ((f"co-registered {name}", files[name + "_prewarped"]), (f"warped {name}", files[name])):
                best = None
                for k in range(args.repeats):
                    out = workdir / f"out_{size}_{label.replace(' ', '_')}_{k}.tif"
                    r = child(["run", files["optical"], sar, str(out)])
                    runs_log.append((size, label, r))
                    if best is None or r["cpu"] < best["cpu"]:
                        best = r
                    if k == 0:
                        outs[label] = r
                    else:
                        for path in r["outputs"].values():
                            os.remove(path)
                rows.append((size, label, best, outs[label]))
            tile, overlap = outs[f"warped {name}"]["tile"], outs[f"warped {name}"]["overlap"]
            d = child(["diff", outs[f"warped {name}"]["outputs"]["restored"],
                       outs[f"co-registered {name}"]["outputs"]["restored"], str(tile - overlap), str(overlap)])
            rows[-1] += (d,)
            for t, o in [(tile, overlap)] + [(t, 64) for t in args.read_tiles]:
                s = child(["reads", files["optical"], files[name], files[name + "_prewarped"], str(t), str(o)])
                c = child(["reads", files["optical"], files[name + "_prewarped"], files[name + "_prewarped"],
                           str(t), str(o)])
                reads.append((size, name, t, o, s, c))
            for o in outs.values():
                for path in o["outputs"].values():
                    os.remove(path)

    print("| scene | SAR | wall s | CPU s (user+sys) | CPU vs co-registered | peak RSS MB | "
          "restored vs co-registered, max / mean abs DN: all | tile borders | interiors | "
          f"> {EDGE} px from the swath edge | tile borders > {EDGE} px from it | valid-mask mismatches |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = {}
    for row in rows:
        size, label, best = row[:3]
        diff = row[4] if len(row) > 4 else None
        name = label.split()[-1]
        if label.startswith("co-registered"):
            base[(size, name)] = best["cpu"]
        ratio = best["cpu"] / base[(size, name)]
        cells = ([""] * 6 if diff is None else
                 [fmt_pair(diff[k]) for k in ("all", "border", "interior", "away", "away_border")]
                 + [str(diff["mismatched_valid"])])
        print(f"| {size}² | {label} | {best['wall']:.1f} | {best['cpu']:.1f} | {ratio:.2f}x | {best['rss_mb']:.0f} | "
              + " | ".join(cells) + " |")
    print("\nSAR as the engine reads it (RasterSource.read on each tile window, under the engine's GDAL "
          "settings), vs the pre-warped SAR, dB:\n")
    print("| scene | SAR | tile / overlap (tiles) | max / mean abs: all | tile borders | interiors | "
          "max disagreement between overlapping tiles | pixels whose validity differs between tiles | "
          "validity mismatches vs pre-warped | read CPU s (co-registered read CPU s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, name, t, o, s, c in reads:
        print(f"| {size}² | {name} | {t} / {o} ({s['tiles']}) | {s['max']:.4f} / {s['mean']:.5f} | "
              f"{fmt_pair(s['border'], 4)} | {fmt_pair(s['interior'], 4)} | {s['between_tiles']:.4f} | "
              f"{s['valid_flips']} | {s['mismatched_valid']} | {s['read_cpu_s']:.2f} ({c['read_cpu_s']:.2f}) |")
    print("\nAll runs (wall s, CPU s, /usr/bin/time max RSS MB, own VmHWM MB, engine s, model s):")
    for size, label, r in runs_log:
        print(f"- {size}² {label}: {r['wall']:.1f}, {r['cpu']:.1f}, {r['rss_mb']:.0f}, {r['vmhwm_mb']:.0f}, "
              f"{r['seconds']:.1f}, {r['model_seconds']:.1f}  (`{r['cmd']}`)")


if __name__ == "__main__":
    main()
