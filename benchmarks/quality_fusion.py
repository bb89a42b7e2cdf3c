"""Fusion quality benchmark: EN, SD, SF, AG, Qabf, SSIM, VIF (+ MI, PSNR) per method.

    .venv/bin/python benchmarks/quality_fusion.py [--data ../shared/data] [--pairs heldout|all|both]
                                                  [--network MODEL.onnx] [--no-despeckle-variants]
                                                  [--per-pair]

Pairs (real imagery from ``../shared/data``, every image converted to 8 bits first):

* ``cfog``: ``sar_optical/cfog_stest3_{sar,optical}.tif`` (uint8, used as is);
* ``sen12mscr/*``: VV of ``s1.tif`` clipped to [-25, 0] dB -> 0..255; RGB = bands 4,3,2 of
  ``s2_cloudfree.tif`` clipped to [0, 3000] DN -> 0..255;
* ``ssl4eo/0000200``: the same conversions, S1 VV reprojected onto the S2 grid
  (``rasterio.warp.reproject``, bilinear); pairs (S1 2020-06-07, S2 L1C 2020-06-04) and
  (S1 2020-09-03, S2 L2A 2020-08-13).

``heldout`` are the pairs the fusion network never saw (``models/fusion/splits.py``: the
bottom third of CFOG and 3 SEN12MS-CR samples); ``all`` is every pair (fine for the classical
methods, which learn nothing). Methods run through ``ClassicalFusionProcessor`` on the
whole image (one tile; tiled runs give the same values, see tests); the fused image is rounded
to 8 bits, as the engine writes it for uint8 optical input. Metrics follow
``plugin/core/metrics/fusion.py`` (grey = BT.601 luma; A = SAR, B = optical; SSIM, VIF and MI
are sums over the two sources) and are averaged over the pairs.

``--network``: an ONNX fusion model with a SkyClear card. Its inputs are fed through the
card: the 8-bit image ``v`` is mapped onto each band's clip range ``lo + v/255 (hi - lo)`` (so a
card with dB or DN ranges receives the same values our 8-bit conversion came from) and then
``(x - offset) / scale``; the output goes back the same way. The network also runs on the
despeckled SAR (``network + Lee``: the same 7x7 Lee filter as the classical ``+ Lee`` rows, in
linear intensity for dB data), scored against the raw SAR like those rows.

``--per-pair``: a table per pair of Qabf, VIF and SSIM for every method (the means hide which
pairs a method wins on).

``--figure PNG`` (with ``--network``): optical, SAR, guided filter and network side by side on the
first held-out pair (CFOG bottom third, a crop), each panel the 8-bit values as written (needs Pillow).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Dict, List, Optional

import numpy as np

from skyclear.models.fusion import splits
from skyclear.plugin.core.metrics.fusion import METRIC_NAMES, fusion_metrics
from skyclear.plugin.core.pipelines.fusion_classical import ClassicalFusionProcessor
from figures import save_panels  # benchmarks/figures.py

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data"))

LABELS = {"en": "EN", "sd": "SD", "sf": "SF", "ag": "AG", "qabf": "Qabf", "ssim": "SSIM", "vif": "VIF",
          "mi": "MI", "psnr": "PSNR"}
# Yan et al. 2025 (seed 001), Tables of the two SAR-visible datasets of the paper (not our data).
PAPER = [
    ("paper ds1: Ours (LSNF)", dict(en=7.118, qabf=0.620, sd=40.277, ag=13.244, sf=34.402, ssim=0.966, vif=0.638)),
    ("paper ds1: CDDFuse", dict(en=7.197, qabf=0.618, sd=41.234, ag=12.546, sf=32.799, ssim=0.929, vif=0.651)),
    ("paper ds1: Hybrid-MSD", dict(en=7.018, qabf=0.565, sd=38.034, ag=12.867, sf=34.572, ssim=0.978, vif=0.543)),
    ("paper ds1: WLS", dict(en=6.992, qabf=0.539, sd=35.601, ag=12.086, sf=32.839, ssim=0.967, vif=0.499)),
    ("paper ds2: Ours (LSNF)", dict(en=7.036, qabf=0.730, sd=52.443, ag=19.541, sf=52.833, ssim=0.845, vif=0.744)),
]


# ---------------------------------------------------------------------------------------
# data


def _read(path, bands=None):
    import rasterio
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path) as src:
            return src.read(bands).astype(np.float64)


def to8(v, lo, hi):
    v = np.nan_to_num(np.asarray(v, np.float64), nan=lo, posinf=hi, neginf=lo)
    return np.rint((np.clip(v, lo, hi) - lo) / (hi - lo) * 255.0)


def s1_vv8(vv_db):
    return to8(vv_db, -25.0, 0.0)


def s2_rgb8(s2):
    return to8(s2[[3, 2, 1]], 0.0, 3000.0)


def load_cfog(root, rows=None):
    sar = _read(os.path.join(root, splits.CFOG_SAR))[:1]
    opt = _read(os.path.join(root, splits.CFOG_OPTICAL))[:3]
    if rows is not None:
        sar, opt = sar[:, rows[0]:rows[1]], opt[:, rows[0]:rows[1]]
    return {"sar": sar, "optical": opt, "sar_units": "linear"}


def load_sen12mscr(folder):
    return {"sar": s1_vv8(_read(os.path.join(folder, "s1.tif"), [1])),
            "optical": s2_rgb8(_read(os.path.join(folder, "s2_cloudfree.tif"))), "sar_units": "db"}


def load_ssl4eo(folder, s1_name, s2_name):
    import rasterio
    from rasterio.warp import Resampling, reproject
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(os.path.join(folder, s2_name)) as s2, rasterio.open(os.path.join(folder, s1_name)) as s1:
            opt = s2.read().astype(np.float64)
            vv = np.full((1, s2.height, s2.width), np.nan, dtype=np.float32)
            reproject(s1.read(1).astype(np.float32), vv[0], src_transform=s1.transform, src_crs=s1.crs,
                      dst_transform=s2.transform, dst_crs=s2.crs, resampling=Resampling.bilinear,
                      src_nodata=np.nan, dst_nodata=np.nan)
    valid = np.isfinite(vv[0])
    # S1 does not cover the last 2 rows and columns of the S2 grid: crop to the covered rectangle
    rows, cols = np.where(valid.mean(1) > 0.5)[0], np.where(valid.mean(0) > 0.5)[0]
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    if not valid[r0:r1, c0:c1].all():
        raise ValueError(f"{folder}: S1 does not cover a rectangle of the S2 grid")
    return {"sar": s1_vv8(vv[:, r0:r1, c0:c1]), "optical": s2_rgb8(opt)[:, r0:r1, c0:c1], "sar_units": "db"}


def load_pairs(root: str, which: str) -> List[Dict]:
    pairs = []
    cfog = os.path.join(root, splits.CFOG_SAR)
    held = set(splits.SEN12MSCR_HELDOUT)
    if which == "heldout":
        if os.path.exists(cfog):
            pairs.append(dict(name="cfog_bottom(heldout)", **load_cfog(root, splits.cfog_heldout_rows())))
        for sid in splits.SEN12MSCR_HELDOUT:
            folder = os.path.join(root, "sen12mscr", sid)
            if os.path.isdir(folder):
                pairs.append(dict(name=sid, **load_sen12mscr(folder)))
        return pairs
    if os.path.exists(cfog):
        pairs.append(dict(name="cfog_full", **load_cfog(root)))
    base = os.path.join(root, "sen12mscr")
    for sid in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        pairs.append(dict(name=sid + ("(heldout)" if sid in held else ""), **load_sen12mscr(os.path.join(base, sid))))
    ssl = os.path.join(root, "ssl4eo", "0000200")
    if os.path.isdir(ssl):
        pairs.append(dict(name="ssl4eo_0607_l1c0604", **load_ssl4eo(ssl, "s1_20200607.tif", "s2l1c_20200604.tif")))
        pairs.append(dict(name="ssl4eo_0903_l2a0813", **load_ssl4eo(ssl, "s1_20200903.tif", "s2l2a_20200813.tif")))
    return pairs


# ---------------------------------------------------------------------------------------
# methods


def despeckled(pair):
    """The pair with its SAR Lee-filtered exactly as the classical '+ Lee' rows do (8-bit scale)."""
    proc = ClassicalFusionProcessor("average", despeckle="lee", sar_units=pair["sar_units"])
    return dict(pair, sar=proc.despeckle_sar(pair["sar"][0] / 255.0)[None] * 255.0)


def run_classical(method, despeckle, pair):
    proc = ClassicalFusionProcessor(method, despeckle=despeckle, sar_units=pair["sar_units"])
    x = {"optical": (pair["optical"] / 255.0).astype(np.float32)[None],
         "sar": (pair["sar"] / 255.0).astype(np.float32)[None]}
    return np.rint(np.clip(proc(x, [(0, 0)])["fused"][0], 0, 1) * 255.0)


class NetworkRunner:
    def __init__(self, path: str, threads: Optional[int] = None):
        import onnxruntime as ort
        from skyclear.plugin.core.model_card import card_from_session
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.card = card_from_session(self.session, path)
        self.name = f"network ({self.card.name})"

    @staticmethod
    def _to_net(v8, bands):
        out = []
        for v, b in zip(v8, bands):
            lo, hi = b.clip if b.clip else (0.0, 255.0)
            out.append((lo + v / 255.0 * (hi - lo) - b.offset) / b.scale)
        return np.stack(out).astype(np.float32)

    def __call__(self, pair):
        feeds = {}
        for spec in self.card.inputs:
            src = pair["sar"] if spec.role == "sar" else pair["optical"]
            feeds[spec.name] = self._to_net(src[:len(spec.bands)], spec.bands)[None]
        h, w = pair["optical"].shape[1:]
        m = self.card.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            feeds = {k: np.pad(v, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect") for k, v in feeds.items()}
        spec = self.card.outputs[0]
        y = self.session.run([spec.name], feeds)[0][0, :, :h, :w].astype(np.float64)
        out = []
        for x, b in zip(y, spec.bands):
            lo, hi = b.clip if b.clip else (0.0, 255.0)
            out.append((np.clip(x * b.scale + b.offset, lo, hi) - lo) / (hi - lo) * 255.0)
        return np.rint(np.stack(out))


# ---------------------------------------------------------------------------------------
# table


def fmt_row(name, vals, keys, width):
    cells = [f"{vals[k]:.3f}" if k in vals and np.isfinite(vals[k]) else ("inf" if k in vals else "")
             for k in keys]
    return "| " + name.ljust(width) + " | " + " | ".join(cells) + " |"


def evaluate(pairs, methods, verbose=False):
    """Mean metrics per method, and the per-pair values (``_per_pair``: name -> metrics)."""
    results = {}
    for label, fn in methods:
        per_pair = []
        t0 = time.time()
        for p in pairs:
            fused = fn(p)
            m = fusion_metrics(fused, p["sar"], p["optical"])
            per_pair.append(m)
            if verbose:
                print(f"  {label:28s} {p['name']:24s} " + " ".join(f"{k}={m[k]:.3f}" for k in METRIC_NAMES),
                      file=sys.stderr)
        results[label] = {k: float(np.mean([m[k] for m in per_pair])) for k in METRIC_NAMES}
        results[label]["_seconds"] = time.time() - t0
        results[label]["_per_pair"] = {p["name"]: m for p, m in zip(pairs, per_pair)}
    return results


def print_per_pair(results, pairs, keys=("qabf", "vif", "ssim")):
    width = max(len(k) for k in results)
    names = [p["name"] for p in pairs]
    print("\nper pair (" + ", ".join(LABELS[k] for k in keys) + "):\n")
    print("| " + "method".ljust(width) + " | " + " | ".join(f"{n} {LABELS[k]}" for n in names for k in keys) + " |")
    print("|" + "-" * (width + 2) + "|" + "|".join("---:" for _ in names for _ in keys) + "|")
    for label, vals in results.items():
        cells = [f"{vals['_per_pair'][n][k]:.3f}" for n in names for k in keys]
        print("| " + label.ljust(width) + " | " + " | ".join(cells) + " |")


def print_table(title, results, n_pairs):
    keys = ["en", "qabf", "sd", "ag", "sf", "ssim", "vif", "mi", "psnr"]
    width = max(len(k) for k in list(results) + [p[0] for p in PAPER])
    print(f"\n### {title} ({n_pairs} pairs, mean)\n")
    print("| " + "method".ljust(width) + " | " + " | ".join(LABELS[k] for k in keys) + " |")
    print("|" + "-" * (width + 2) + "|" + "|".join("---:" for _ in keys) + "|")
    for name, vals in results.items():
        print(fmt_row(name, vals, keys, width))
    for name, vals in PAPER:
        print(fmt_row(name, vals, keys, width))


def save_figure(path, pair, panels, width=320):
    """Side-by-side PNG of ``panels`` [(title, (3|1, H, W) 0..255)] on a ``width``-px crop of ``pair``."""
    x0 = max(0, (pair["optical"].shape[2] - width) // 2)
    save_panels(path, [[(title, np.clip(np.asarray(img)[:, :, x0:x0 + width], 0, 255).astype(np.uint8))
                        for title, img in panels]])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--pairs", choices=("heldout", "all", "both"), default="both")
    ap.add_argument("--network", help="ONNX fusion model with a SkyClear card")
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime threads for --network")
    ap.add_argument("--no-despeckle-variants", action="store_true", help="skip the +Lee rows")
    ap.add_argument("--verbose", action="store_true", help="per-pair values on stderr")
    ap.add_argument("--per-pair", action="store_true", help="a per-pair table of Qabf, VIF and SSIM")
    ap.add_argument("--figure", help="PNG: optical, SAR, guided filter, network on the first held-out pair")
    args = ap.parse_args(argv)

    methods = [("optical only", lambda p: run_classical("optical", None, p)),
               ("average", lambda p: run_classical("average", None, p)),
               ("laplacian", lambda p: run_classical("laplacian", None, p)),
               ("guided (GFF)", lambda p: run_classical("guided", None, p))]
    if not args.no_despeckle_variants:
        methods += [("average + Lee", lambda p: run_classical("average", "lee", p)),
                    ("laplacian + Lee", lambda p: run_classical("laplacian", "lee", p)),
                    ("guided (GFF) + Lee", lambda p: run_classical("guided", "lee", p))]
    network = None
    if args.network:
        network = NetworkRunner(args.network, args.threads)
        methods.append((network.name, network))
        if not args.no_despeckle_variants:
            methods.append((network.name + " + Lee", lambda p: network(despeckled(p))))

    print("Fusion metrics on 8-bit grey images (BT.601 luma); A = SAR, B = optical; SSIM = SSIM(F,A)+SSIM(F,B), "
          "VIF = VIF(A,F)+VIF(B,F), MI = MI(A,F)+MI(B,F) in bits; PSNR vs both sources (dB).")
    print("Paper rows: Yan et al. 2025, their two SAR-visible datasets -- different data, context only.")
    print("'+ Lee' rows are still scored against the raw (speckled) SAR: speckle counts as detail to transfer, "
          "so despeckling lowers Qabf, MI, AG and SF there.")
    if args.figure and network is not None:
        pair = load_pairs(args.data, "heldout")[0]
        save_figure(args.figure, pair, [("optical", pair["optical"]), ("SAR", pair["sar"]),
                                        ("guided filter (GFF)", run_classical("guided", None, pair)),
                                        (network.name, network(pair))])
        print(f"figure: {args.figure} ({pair['name']})")
    for which in (("heldout", "all") if args.pairs == "both" else (args.pairs,)):
        pairs = load_pairs(args.data, which)
        if not pairs:
            raise SystemExit(f"no pairs found under {args.data}")
        results = evaluate(pairs, methods, args.verbose)
        title = ("held-out pairs (never seen by the network: CFOG bottom third + SEN12MS-CR "
                 + ", ".join(splits.SEN12MSCR_HELDOUT) + ")") if which == "heldout" else \
            "all pairs (CFOG full, 15 SEN12MS-CR, 2 SSL4EO; includes the network's training pairs)"
        print_table(title, results, len(pairs))
        if args.per_pair:
            print_per_pair(results, pairs)
        print("\npairs: " + ", ".join(f"{p['name']} {p['optical'].shape[2]}x{p['optical'].shape[1]}" for p in pairs))
        print("seconds per method (these pairs, incl. metrics): "
              + ", ".join(f"{k} {v['_seconds']:.1f}" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
