"""Choose the DE sampler settings (eta, and optionally t_start, steps and averaged samples) on the
VALIDATION pairs.

    python -m skyclear.models.diffusion.select_sampler RUN [--etas 0 0.1 0.2 0.3 0.5 0.7 1] \
        [--t-starts 300 200] [--steps 10 5x2 2x5] [--crop 256] [--max-pairs 0] [--seed 0]

``--steps`` entries are STEPS or STEPSxSAMPLES: ``2x5`` runs 2 DDIM steps from 5 independent start
noises and scores the mean of the 5 outputs (the plugin's ``samples``); ``10``, ``5x2`` and ``2x5``
cost the same 10 step-graph calls per tile.

RUN is a de-wa or de-joint run. For every setting, the torch twin of the plugin's sampler
(``gaussian.sample``: DDIM, deterministic, start noise from a fixed seed per pair and sample, the
same for every setting) runs E + DE on the central ``--crop`` of each validation pair (``splits.py``; never
a held-out test pair), and the uint8 output is scored with the plugin's PSNR / SSIM (data range
255) and grain ratio (``plugin/core/metrics/grain.py``).

eta = 1 is always in the grid: W is then clamped to 1 at every step, so DE returns x0_E exactly
(``tests/test_diffusion_truncated.py`` checks this), and the chosen setting cannot score below E
on these pairs. Criterion: the highest mean PSNR among the settings whose mean SSIM is not below
E's and whose mean grain ratio is not above max(1, E's) (``--no-grain-limit`` drops the latter);
ties go to the larger eta (closer to E), then to fewer step calls; when E itself (eta = 1) is
chosen, one sample is stored. Writes ``RUN/sampler_selection.json``, which the export puts into the
step model's card (``extra.eta``, ``extra.t_start``, ``extra.steps_default``, ``extra.samples_default``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List

import numpy as np
import torch

from ..common.run import RunDir
from .data import PairDataset, from_net, split_roots, to_net
from .gaussian import GaussianDiffusion, sample
from .trainer import load_cnp_wa, load_reference
from ...plugin.core.pipelines.optical_cloud_removal import steps_and_samples


def center_crop(a: np.ndarray, size: int, multiple: int) -> np.ndarray:
    """Central ``size`` crop (whole image when 0), trimmed to a multiple of ``multiple``."""
    h, w = a.shape[-2:]
    ch, cw = (min(size, h), min(size, w)) if size else (h, w)
    ch, cw = ch - ch % multiple, cw - cw % multiple
    top, left = (h - ch) // 2, (w - cw) // 2
    return a[..., top:top + ch, left:left + cw]


def score(out_u8: np.ndarray, clear_u8: np.ndarray) -> Dict[str, float]:
    from ...plugin.core.metrics.grain import grain
    from ...plugin.core.metrics.restoration import psnr, ssim
    return {"psnr": psnr(out_u8, clear_u8, 255.0), "ssim": ssim(out_u8, clear_u8, 255.0),
            "grain": grain(out_u8, clear_u8)["ratio"]}


def choose(rows: List[dict], e_scores: Dict[str, float], grain_limit: bool = True) -> dict:
    """The row with the highest mean PSNR whose SSIM is not below E's (and grain not above
    max(1, E's)); ties to the larger eta, then to fewer step calls. Rows with eta = 1 are E itself
    and always qualify (averaging copies of E adds nothing: one sample)."""
    max_grain = max(1.0, e_scores["grain"])

    def ok(r):
        if r["eta"] >= 1.0:
            return True
        return r["ssim"] >= e_scores["ssim"] and (not grain_limit or r["grain"] <= max_grain)
    candidates = [r for r in rows if ok(r)]
    best = max(candidates, key=lambda r: (round(r["psnr"], 6), r["eta"], -r.get("steps", 1) * r.get("samples", 1)))
    return dict(best, samples=1) if best["eta"] >= 1.0 else best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m skyclear.models.diffusion.select_sampler", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a de-wa or de-joint run folder")
    p.add_argument("--etas", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0])
    p.add_argument("--t-starts", type=int, nargs="+",
                   help="truncated starts to try (-1 = full trajectory from pure noise); default: the run's t_start")
    p.add_argument("--steps", nargs="+", type=steps_and_samples, help="STEPS or STEPSxSAMPLES (e.g. 10 5x2 2x5); default: the run's "
                                              "sample_steps, one sample")
    p.add_argument("--crop", type=int, default=256, help="central crop per pair (0 = whole image)")
    p.add_argument("--max-pairs", type=int, default=0, help="use only the first N validation pairs (0 = all)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-grain-limit", action="store_true", help="choose on PSNR/SSIM only")
    p.add_argument("--data", help="override the run's data folders (comma separated)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = RunDir(args.run_dir).config()
    if config["kind"] not in ("de-wa", "de-joint"):
        raise SystemExit(f"{args.run_dir} is a {config['kind']} run; select_sampler needs a de-wa or de-joint run")
    bands = int(config["bands"])
    cnp, wa, _ = load_cnp_wa(args.run_dir, bands)
    reference, _ = load_reference(config["reference_run"], bands)
    cnp, wa, reference = cnp.to(device), wa.to(device), reference.to(device)
    diffusion = GaussianDiffusion(**config["diffusion"])
    trained_t = config.get("t_start")
    t_starts = args.t_starts or [trained_t]
    t_starts = [None if t is None or t < 0 else int(t) for t in t_starts]
    for t in t_starts:
        if trained_t is not None and (t is None or t > int(trained_t)):
            print(f"warning: t_start {t} is above the t <= {trained_t} the CNP was trained on", file=sys.stderr)
    shapes = args.steps or [(int(config.get("sample_steps") or 10), 1)]
    etas = sorted(set(float(e) for e in args.etas) | {1.0})

    validation = PairDataset(split_roots(args.data or config["data"]), "validation", bands)
    n = len(validation) if not args.max_pairs else min(args.max_pairs, len(validation))
    multiple = max(8, cnp.size_multiple, wa.size_multiple)
    ys = [center_crop(to_net(validation.cloudy[i]), args.crop, multiple) for i in range(n)]
    clears = [center_crop(validation.clear[i], args.crop, multiple) for i in range(n)]
    ids = [f"{os.path.basename(os.path.normpath(validation.pairs[i].root))}/{validation.pairs[i].pair_id}"
           for i in range(n)]
    print(f"{n} validation pairs ({', '.join(ids)}), crop {args.crop or 'whole image'}; "
          f"t_start {t_starts}, steps x samples {shapes}, eta {etas}", flush=True)

    # batches of same-shape crops; E once per batch
    groups: List[List[int]] = []
    for i in range(n):
        if groups and len(groups[-1]) < args.batch and ys[groups[-1][0]].shape == ys[i].shape:
            groups[-1].append(i)
        else:
            groups.append([i])
    x0_refs: Dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for g in groups:
            out = reference(torch.from_numpy(np.stack([ys[i] for i in g])).to(device))
            for k, i in enumerate(g):
                x0_refs[i] = out[k:k + 1]

    def per_pair_scores(outputs: Dict[int, np.ndarray]) -> List[Dict[str, float]]:
        return [score(from_net(outputs[i]), clears[i]) for i in range(n)]

    def mean(scores):
        return {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}

    e_pairs = per_pair_scores({i: x0_refs[i][0].cpu().numpy() for i in range(n)})
    e_scores = mean(e_pairs)
    print(f"E alone: PSNR {e_scores['psnr']:.3f} SSIM {e_scores['ssim']:.4f} grain {e_scores['grain']:.3f}", flush=True)
    rows = []
    for t_start in t_starts:
        for steps, samples in shapes:
            for eta in etas:
                tick = time.time()
                if eta >= 1.0:
                    pairs = e_pairs   # W = 1 at every step: DE returns x0_E exactly
                else:
                    outputs = {}
                    for g in groups:
                        y = torch.from_numpy(np.stack([ys[i] for i in g])).to(device)
                        ref = torch.cat([x0_refs[i] for i in g])

                        def step(x, t, y=y, ref=ref):
                            return cnp(x, t, y, ref), wa(x, t, y, ref)
                        total = 0
                        for k in range(samples):   # sample 0 keeps the seeds of single-sample runs
                            start = torch.cat([torch.randn(ref.shape[1:], generator=torch.Generator().manual_seed(
                                args.seed * 100003 + i + 1_000_003 * k))[None] for i in g]).to(device)
                            with torch.no_grad():
                                total = total + sample(step, ref, [start], steps=steps, eta=eta, sampler="ddim",
                                                       diffusion=diffusion, t_start=t_start).double()
                        out = (total / samples).float()
                        for k, i in enumerate(g):
                            outputs[i] = out[k].cpu().numpy()
                    pairs = per_pair_scores(outputs)
                m = mean(pairs)
                rows.append({"t_start": t_start, "steps": steps, "samples": samples, "eta": eta, **m,
                             "d_psnr": m["psnr"] - e_scores["psnr"], "d_ssim": m["ssim"] - e_scores["ssim"],
                             "per_pair_psnr": [round(s["psnr"], 3) for s in pairs]})
                print(f"t_start {t_start} steps {steps:>2} x {samples} samples eta {eta:.2f}: PSNR {m['psnr']:.3f} "
                      f"({m['psnr'] - e_scores['psnr']:+.3f} vs E) SSIM {m['ssim']:.4f} "
                      f"({m['ssim'] - e_scores['ssim']:+.4f}) grain {m['grain']:.3f} [{time.time() - tick:.0f} s]",
                      flush=True)
    chosen = choose(rows, e_scores, grain_limit=not args.no_grain_limit)
    criterion = ("max mean PSNR on the validation pairs s.t. mean SSIM >= E's"
                 + ("" if args.no_grain_limit else " and mean grain ratio <= max(1, E's)")
                 + "; ties to the larger eta; eta = 1 (= E) always qualifies")
    result = {"criterion": criterion, "validation_pairs": ids, "crop": args.crop, "seed": args.seed,
              "reference_E": {k: round(v, 4) for k, v in e_scores.items()},
              "chosen": {"eta": chosen["eta"], "t_start": chosen["t_start"], "steps": chosen["steps"],
                         "samples": chosen["samples"]},
              "chosen_scores": {k: round(chosen[k], 4) for k in ("psnr", "ssim", "grain", "d_psnr", "d_ssim")},
              "table": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}
    path = os.path.join(args.run_dir, "sampler_selection.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
    print(f"chosen: eta {chosen['eta']}, t_start {chosen['t_start']}, steps {chosen['steps']} x "
          f"{chosen['samples']} samples "
          f"(PSNR {chosen['d_psnr']:+.3f} dB, SSIM {chosen['d_ssim']:+.4f} vs E on {n} validation pairs); "
          f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
