"""How far above both classical fusions can ANY fused image get? An estimate of the ceiling for issue 12's bar.

    python benchmarks/fusion_headroom.py [--steps 200] [--start-average 0.0] [--pairs validation|heldout]

On the fusion validation pairs (``models/fusion/splits.py``), every
pixel of the fused luminance is a free variable. Starting from the guided-filter fusion (GFF), or
GFF + a·(average − GFF), Adam (lr 0.01) maximises a smooth minimum (temperature 0.003) of the
relative margins of the MEAN metrics over the bar: Qabf and VIF of the guided filter, SSIM of the
Laplacian pyramid — the criterion the fusion trainer selects checkpoints by. The metrics are the
trainer's differentiable ports (``models/fusion/losses.py``); the final images are scored the way
the trainer validates (RGB = optical + (fused − Y), 8-bit, BT.601 grey, the plugin's metrics).

A network's output is one such image, so what free pixels reach bounds what a network reaches on
these images -- up to the optimiser: Adam finds a local optimum of a non-convex objective, so this
is an estimate of the ceiling, not a proof. If its worst margin stays below 0, the bar ("beat both
classical methods on Qabf, VIF and SSIM at once") is at best within a hair's reach on them. ``--pairs heldout`` asks the same of the held-out pairs: a statement about the bar on
those images, not a model choice (nothing trained or selected uses it). ~2 minutes per 200 steps
on one CPU thread.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from skyclear.models.fusion import data as fdata
from skyclear.models.fusion.losses import qabf, ssim, vif
from skyclear.plugin.core import fusion_classical
from skyclear.plugin.core.metrics import fusion as metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("qabf", "vif", "ssim")
LUMA = (0.299, 0.587, 0.114)


def luminance(opt: np.ndarray) -> np.ndarray:
    return sum(w * band for w, band in zip(LUMA, opt))


def classical(sar: np.ndarray, opt: np.ndarray, method: str) -> np.ndarray:
    """Fused luminance in [-1, 1] (the pairs' units) by one of the plugin's classical methods."""
    return fusion_classical.fuse_grey(0.5 * (luminance(opt) + 1), 0.5 * (sar[0] + 1), method) * 2 - 1


def ported(fused, y, sar):
    return {"qabf": qabf(fused, y, sar), "vif": vif(y, fused) + vif(sar, fused),
            "ssim": ssim(fused, y) + ssim(fused, sar)}


def judged(fused: np.ndarray, sar: np.ndarray, opt: np.ndarray):
    """Qabf / VIF sum / SSIM sum as the trainer validates (A = SAR, B = optical)."""
    rgb = np.clip(opt + (fused - luminance(opt))[None], -1, 1)
    to8 = lambda x: np.rint((np.clip(x, -1, 1) + 1) * 127.5)  # noqa: E731
    f, a, b = (metrics.to_grey8(to8(x)) for x in (rgb, sar, opt))
    return {"qabf": metrics.qabf(f, a, b), "vif": metrics.vif_sum(f, a, b), "ssim": metrics.ssim_sum(f, a, b)}


def mean(rows):
    return {k: float(np.mean([r[k] for r in rows])) for k in KEYS}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--start-average", type=float, default=0.0, help="start at GFF + a (average - GFF)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", choices=("validation", "heldout"), default="validation")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tensor = lambda x: torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None]  # noqa: E731

    pairs = (fdata.load_validation_pairs if args.pairs == "validation" else fdata.load_heldout_pairs)(args.data)
    if not pairs:
        raise SystemExit(f"no fusion {args.pairs} pairs under {args.data}")
    guided = [classical(sar, opt, "guided") for _, sar, opt in pairs]
    laplacian = [classical(sar, opt, "laplacian") for _, sar, opt in pairs]
    average = [classical(sar, opt, "average") for _, sar, opt in pairs]
    ys = [tensor(luminance(opt)) for _, _, opt in pairs]
    sars = [tensor(sar[0]) for _, sar, _ in pairs]

    with torch.no_grad():
        bar_ported = {"qabf": float(np.mean([ported(tensor(g), y, s)["qabf"] for g, y, s in zip(guided, ys, sars)])),
                      "vif": float(np.mean([ported(tensor(g), y, s)["vif"] for g, y, s in zip(guided, ys, sars)])),
                      "ssim": float(np.mean([ported(tensor(l), y, s)["ssim"] for l, y, s in zip(laplacian, ys, sars)]))}
    free = [tensor(g + args.start_average * (a - g)).requires_grad_(True) for g, a in zip(guided, average)]
    opt = torch.optim.Adam(free, lr=0.01)
    started = time.time()
    for step in range(args.steps):
        m = [ported(f, y, s) for f, y, s in zip(free, ys, sars)]
        margins = torch.stack([(sum(r[k] for r in m) / len(m) - bar_ported[k]) / bar_ported[k] for k in KEYS])
        loss = 0.003 * torch.logsumexp(-margins / 0.003, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.time() - started

    rows = {"guided filter": [judged(g, s, o) for g, (_, s, o) in zip(guided, pairs)],
            "laplacian pyramid": [judged(l, s, o) for l, (_, s, o) in zip(laplacian, pairs)],
            "free pixels (bound)": [judged(f.detach()[0, 0].numpy().astype(np.float64), s, o)
                                    for f, (_, s, o) in zip(free, pairs)]}
    means = {name: mean(r) for name, r in rows.items()}
    bar = {"qabf": means["guided filter"]["qabf"], "vif": means["guided filter"]["vif"],
           "ssim": means["laplacian pyramid"]["ssim"]}
    print(f"{len(pairs)} {args.pairs} pairs ({', '.join(p[0] for p in pairs)}); {args.steps} Adam steps from GFF"
          f"{f' + {args.start_average} (average - GFF)' if args.start_average else ''}, {seconds:.0f} s\n")
    print("| image | Qabf | VIF | SSIM | worst relative margin over the bar |")
    print("|---|---:|---:|---:|---:|")
    for name, m in means.items():
        worst = min((m[k] - bar[k]) / bar[k] for k in KEYS)
        print(f"| {name} | {m['qabf']:.4f} | {m['vif']:.4f} | {m['ssim']:.4f} | {worst:+.4f} |")
    print(f"| bar (guided Qabf, guided VIF, Laplacian SSIM) | {bar['qabf']:.4f} | {bar['vif']:.4f} "
          f"| {bar['ssim']:.4f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
