"""What each job will read and write, checked for the whole manifest before anything runs.

``plan_jobs`` resolves default models, lists every output a job writes (a SAR cloud
removal also writes a cloud-probability map; a custom model one file per extra output),
computes the job's provenance key and tile grid, and collects every problem: missing or
unreadable files, a model made for another tool, duplicate outputs, an output that is an
input, output folders that do not exist. ``ManifestError`` then lists them all at once.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..plugin.core import tools
from ..plugin.core.engine import SKYCLEAR_VERSION, grid_input, resolve_tiling
from ..plugin.core.errors import SkyClearError
from ..plugin.core.jobs import output_problems
from ..plugin.core.model_card import ModelCard, parse_card, read_card
from ..plugin.core.raster_io import describe_raster
from ..plugin.core.tiling import TileGrid, fit_to_image
from ..plugin.core.zoo import default_model
from .manifest import MODEL, OUTPUT, RASTER, TOOLS, Job, ManifestError

# options that change how a job runs but not what it writes: not part of the resume key
NOT_IN_KEY = ("device",)


@dataclass
class Plan:
    job: Job
    outputs: Dict[str, str] = field(default_factory=dict)     # card output name -> final path
    key: str = ""                                              # provenance: inputs, models, options
    describe: str = ""                                         # the JSON the key hashes
    grid: Optional[TileGrid] = None
    megapixels: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.job.problems


class _Files:
    """Per-manifest caches: each raster header, model card and model hash is read once."""

    def __init__(self):
        self.rasters: Dict[str, Dict] = {}
        self.cards: Dict[str, ModelCard] = {}
        self.hashes: Dict[str, str] = {}

    def raster(self, path: str) -> Dict:
        if path not in self.rasters:
            self.rasters[path] = describe_raster(path)
        return self.rasters[path]

    def card(self, path: str) -> ModelCard:
        if path not in self.cards:
            self.cards[path] = read_card(path)
        return self.cards[path]

    def sha256(self, path: str) -> str:
        if path not in self.hashes:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            self.hashes[path] = digest.hexdigest()
        return self.hashes[path]


def _fingerprint(path: str) -> List[int]:
    """Size and modification time: a changed input reruns its job without hashing gigabytes."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def plan_jobs(jobs: Sequence[Job]) -> List[Plan]:
    files = _Files()
    plans = [_plan(job, files) for job in jobs]
    _check_paths_across_jobs(plans)
    return plans


def require_valid(plans: Sequence[Plan], source: str = "manifest") -> None:
    bad = [p for p in plans if not p.ok]
    if bad:
        count = sum(len(p.job.problems) for p in bad)
        lines = [f"{source}: {count} problem(s) in {len(bad)} of {len(plans)} job(s); nothing was run:"]
        for p in bad:
            lines += [f"  {p.job.label}: {problem}" for problem in p.job.problems]
        raise ManifestError("\n".join(lines))


def _plan(job: Job, files: _Files) -> Plan:
    plan = Plan(job)
    tool = TOOLS.get(job.tool)
    if tool is None:
        return plan
    kw = job.kwargs
    # the files named in the row, for the duplicate checks even when the row has other problems
    plan.outputs = {key.lower(): os.path.abspath(kw[p.keyword]) for key, p in tool.params.items()
                    if p.kind == OUTPUT and kw.get(p.keyword)}
    if job.problems:
        return plan
    for keyword, task in tool.spec.default_models(kw):
        try:
            kw[keyword] = default_model(task)
        except SkyClearError as exc:
            job.problems.append(str(exc))
    # every input exists and opens
    for key, param in tool.params.items():
        path = kw.get(param.keyword)
        if not path or param.kind not in (RASTER, MODEL):
            continue
        if not os.path.isfile(path):
            job.problems.append(f"{key}: file not found: {path}")
            continue
        try:
            if param.kind == RASTER:
                files.raster(path)
            else:
                tools.require_card(tool.spec, param.keyword, files.card(path), path)
        except SkyClearError as exc:
            job.problems.append(f"{key}: {exc}")
    if job.problems:
        return plan
    try:
        card = _card(job, files)
    except SkyClearError as exc:
        job.problems.append(str(exc))
        return plan
    uses_steps = any(slot.keyword == "step_model" for slot in tool.spec.models_in_use(kw))
    if uses_steps and kw.get("step_model") and kw.get("steps") is not None:
        from ..plugin.core.pipelines.optical_cloud_removal import card_steps_problem

        problem = card_steps_problem(files.card(kw["step_model"]).extra, kw["steps"])
        if problem:
            job.problems.append(problem)
    plan.outputs = tool.spec.output_files(kw, card)
    job.problems += output_problems(list(plan.outputs.items()))
    try:
        height, width = _optical_size(kw)
    except SkyClearError as exc:
        job.problems.append(f"EXTENT: {exc}")
        return plan
    plan.megapixels = width * height / 1e6
    try:
        tile, overlap = resolve_tiling(card, kw.get("tile_size"), kw.get("overlap"))
        plan.grid = TileGrid(height, width, *fit_to_image(tile, overlap, height, width, card.size_multiple))
    except SkyClearError as exc:
        job.problems.append(f"{'OVERLAP' if 'overlap' in str(exc) else 'TILE_SIZE'}: {exc}")
    models = {k: {"file": os.path.basename(p), "sha256": files.sha256(p)}
              for k, p in job.inputs() if TOOLS[job.tool].params[k].kind == MODEL}
    rasters = {k: {"path": os.path.abspath(p), "size_mtime": _fingerprint(p)}
               for k, p in job.inputs() if TOOLS[job.tool].params[k].kind == RASTER}
    options = {k: v for k, v in sorted(kw.items()) if k not in NOT_IN_KEY and k not in ("model", "step_model")}
    plan.describe = json.dumps({"skyclear": SKYCLEAR_VERSION, "tool": job.tool, "models": models,
                                "inputs": rasters, "options": options}, sort_keys=True)
    plan.key = hashlib.sha256(plan.describe.encode()).hexdigest()
    return plan


def _optical_size(kw) -> Tuple[int, int]:
    """(height, width) of the output grid; turns EXTENT into the optical CRS's (xmin, ymin, xmax, ymax)."""
    import rasterio
    from rasterio.warp import transform_bounds

    from ..plugin.core.raster_io import Grid, subgrid

    with rasterio.open(kw["optical"]) as ds:
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    extent = kw.get("extent")
    if extent is None:
        return grid.height, grid.width
    if len(extent) == 5:
        *box, crs = extent
        if crs and grid.crs is None:
            raise SkyClearError(f"given in {crs} but {os.path.basename(kw['optical'])} has no CRS; "
                                "give it in the raster's own coordinates without a CRS")
        if crs:
            try:
                box = list(transform_bounds(crs, grid.crs, *box, densify_pts=21))
            except Exception as exc:  # rasterio's CRSError and PROJ errors
                raise SkyClearError(f"cannot reproject it from {crs}: {exc}") from exc
        kw["extent"] = box
    sub = subgrid(grid, kw["extent"])
    return sub.height, sub.width


def _card(job: Job, files: _Files) -> ModelCard:
    """The card whose tiling and outputs the job's run uses."""
    kw, spec = job.kwargs, TOOLS[job.tool].spec
    if spec.modelless(kw):
        from ..plugin.core import jobs

        dtypes = {item.role: files.raster(kw[item.keyword])["dtype"] for item in spec.inputs}
        return parse_card(getattr(jobs, spec.modelless_card)({**spec.defaults(), **kw}, dtypes))
    card = files.card(kw["model"])
    if spec.generic:
        grid_role = grid_input(card).role
        if grid_role != "optical":
            raise SkyClearError(f"MODEL: {os.path.basename(kw['model'])} has no optical input")
        if card.inputs_with_role("sar") and not kw.get("sar"):
            job.problems.append(f"SAR: model '{card.name}' needs a SAR raster")
        if kw.get("sar") and not card.inputs_with_role("sar"):
            job.problems.append(f"SAR: a SAR raster was given but model '{card.name}' takes no SAR input")
    return card


def _check_paths_across_jobs(plans: Sequence[Plan]) -> None:
    """No two jobs write one file; no job writes a file any job reads."""
    written: Dict[str, Tuple[Plan, str]] = {}
    for plan in plans:
        for name, path in plan.outputs.items():
            key = os.path.normcase(os.path.realpath(path))
            if key in written:
                other, other_name = written[key]
                where = "itself" if other is plan else other.job.label
                plan.job.problems.append(f"output {path} is also written by {where} (output '{other_name}'); "
                                         "give every output its own path")
                if other is not plan:
                    other.job.problems.append(f"output {path} is also written by {plan.job.label}")
            else:
                written[key] = (plan, name)
    for plan in plans:
        for param, path in plan.job.inputs():
            key = os.path.normcase(os.path.realpath(path))
            hit = written.get(key)
            if hit:
                writer, name = hit
                who = "this job" if writer is plan else writer.job.label
                plan.job.problems.append(f"{param} {path} is the output '{name}' of {who}: it would be "
                                         "overwritten; choose another output path")


def split_bands(grid: TileGrid, parts: int) -> List[Tuple[int, Optional[int]]]:
    """Tile-row ranges for ``parts`` row bands of near-equal height (fewer when the scene has
    fewer tile rows); the last band runs to the end."""
    parts = max(1, min(parts, grid.rows))
    edges = [round(k * grid.rows / parts) for k in range(parts + 1)]
    return [(edges[k], edges[k + 1] if k + 1 < parts else None) for k in range(parts)]
