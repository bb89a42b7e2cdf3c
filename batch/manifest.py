"""The job manifest: one job per row, the Processing tools' own parameter names.

CSV (a header row) or JSON lines (one object per line; keys may also be grouped under
``inputs`` and ``options``). Every row names a ``tool`` and that tool's Processing
parameters (``OPTICAL``, ``SAR``, ``OUTPUT``, ``KEEP_CLEAR``, ...; any case). Two more
columns are the batch's own: ``JOB`` (a name for the report; default: the output's file
name) and ``SPLIT`` (run one scene as that many row bands on several workers; ``auto`` =
one band per worker). Relative paths are relative to the manifest's folder.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..plugin.core import tools
from ..plugin.core.bands import parse_band_list
from ..plugin.core.errors import SkyClearError


class ManifestError(SkyClearError):
    """The manifest cannot run as written; the message lists every problem found."""




# ---------------------------------------------------------------------------------------
# value kinds: Processing's text forms (enum index or name, "4,3,2" band lists, true/false)


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _int(value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a whole number, got {value!r}") from None
    if number != int(number):
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(number)


def _choice(options: Sequence[str]) -> Callable[[Any], str]:
    def convert(value) -> str:
        text = str(value).strip()
        if text.lower() in options:
            return text.lower()
        if text.isdigit() and int(text) < len(options):
            return options[int(text)]  # Processing's enum index
        raise ValueError(f"expected one of {', '.join(options)} (or its index), got {value!r}")
    return convert


def _tile(value) -> Optional[int]:
    number = _int(value)
    if number < 0:
        raise ValueError(f"expected 0 (the model's tile) or a positive size, got {value!r}")
    return number or None


def _overlap(value) -> Optional[int]:
    number = _int(value)
    if number < -1:
        raise ValueError(f"expected -1 (the model's default) or a size >= 0, got {value!r}")
    return None if number == -1 else number


# kinds of parameter: (converter, what it is for validation)
RASTER, MODEL, OUTPUT, VALUE = "raster", "model", "output", "value"


@dataclass(frozen=True)
class Param:
    keyword: str          # the jobs.* keyword argument
    kind: str             # RASTER / MODEL / OUTPUT / VALUE
    convert: Callable[[Any], Any] = str


def _scale(value) -> Optional[str]:
    from ..plugin.core.bands import parse_scale

    try:
        parse_scale(value)
    except SkyClearError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None
    return str(value).strip() or None


def _extent(value) -> List:
    """QGIS's text form 'xmin,xmax,ymin,ymax [EPSG:code]' -> [xmin, ymin, xmax, ymax, crs or None]."""
    text = str(value).strip()
    crs = None
    if text.endswith("]") and "[" in text:
        text, crs = text[:-1].split("[", 1)
        crs = crs.strip()
    try:
        xmin, xmax, ymin, ymax = (float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        raise ValueError(f"expected 'xmin,xmax,ymin,ymax' or 'xmin,xmax,ymin,ymax [EPSG:code]', got {value!r}") from None
    if xmin >= xmax or ymin >= ymax:
        raise ValueError(f"{value!r} is an empty extent (min must be below max)")
    return [xmin, ymin, xmax, ymax, crs]


_CONVERTERS = {tools.BOOL: _bool, tools.INT: _int, tools.FLOAT: float, tools.TILE: _tile,
               tools.OVERLAP: _overlap, tools.EXTENT: _extent, tools.SCALE: _scale}


def _from_model(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Negative (-1, as in Processing) = None, the model card's value (an empty cell is absent)."""
    def parse(value):
        number = convert(value)
        return None if number < 0 else number
    return parse


def _option_param(option: tools.Option) -> Param:
    if option.kind == tools.CHOICE:
        return Param(option.keyword, VALUE, _choice(tuple(option.choices)))
    convert = _CONVERTERS[option.kind]
    return Param(option.keyword, VALUE, _from_model(convert) if option.from_model else convert)


@dataclass(frozen=True)
class Tool:
    """A registry tool as manifest columns: its Processing parameter names."""
    spec: tools.ToolSpec
    required: Tuple[str, ...]
    params: Dict[str, Param]
    defaults: Dict[str, Any] = field(default_factory=dict)   # as the Processing algorithm passes them

    @property
    def name(self) -> str:
        return self.spec.name


def _tool(spec: tools.ToolSpec) -> Tool:
    params: Dict[str, Param] = {}
    for item in spec.inputs:
        params[item.param] = Param(item.keyword, RASTER)
        if item.bands_param:
            params[item.bands_param] = Param(item.bands_keyword, VALUE, parse_band_list)
    params.update({slot.param: Param(slot.keyword, MODEL) for slot in spec.models})
    params.update({option.param: _option_param(option) for option in spec.all_options()})
    params.update({output.param: Param(output.keyword, OUTPUT) for output in spec.outputs})
    required = (tuple(slot.param for slot in spec.models if slot.required)
                + tuple(item.param for item in spec.inputs if item.required) + (spec.outputs[0].param,))
    defaults = {item.bands_keyword: list(item.default_bands) for item in spec.inputs if item.default_bands}
    return Tool(spec, required, params, defaults)


TOOLS: Dict[str, Tool] = {spec.name: _tool(spec) for spec in tools.TOOLS}
BATCH_COLUMNS = ("TOOL", "JOB", "SPLIT")


@dataclass
class Job:
    """One manifest row, converted: ``kwargs`` go straight to ``jobs.<tool>``."""
    row: int                            # 1-based row (CSV: data row; JSON lines: line number)
    name: str
    tool: str
    kwargs: Dict[str, Any]
    split: Union[int, str] = 1          # row bands, or "auto"
    problems: List[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"row {self.row} ({self.name})"

    def inputs(self) -> List[Tuple[str, str]]:
        """(parameter, path) of every file the job reads."""
        tool = TOOLS.get(self.tool)
        if tool is None:
            return []
        return [(key, self.kwargs[p.keyword]) for key, p in tool.params.items()
                if p.kind in (RASTER, MODEL) and self.kwargs.get(p.keyword)]

    def to_dict(self) -> Dict[str, Any]:
        return {"row": self.row, "name": self.name, "tool": self.tool, "kwargs": self.kwargs, "split": self.split}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Job":
        return cls(d["row"], d["name"], d["tool"], dict(d["kwargs"]), d.get("split", 1))


def parse_row(row: int, raw: Dict[str, Any], base_dir: str) -> Job:
    """Convert one row; problems are collected on the job, never raised."""
    values = {str(k).strip().upper(): v for k, v in raw.items()
              if k is not None and v is not None and not (isinstance(v, str) and not v.strip())}
    tool_name = str(values.get("TOOL", "")).strip().lower()
    job = Job(row, str(values.get("JOB", "")).strip(), tool_name, {})
    tool = TOOLS.get(tool_name)
    if tool is None:
        job.name = job.name or f"row{row}"
        job.problems.append(f"unknown tool {values.get('TOOL')!r}; use one of {', '.join(TOOLS)}"
                            if tool_name else f"no tool given; use one of {', '.join(TOOLS)}")
        return job
    job.kwargs.update(tool.defaults)
    unknown = sorted(set(values) - set(tool.params) - set(BATCH_COLUMNS))
    if unknown:
        job.problems.append(f"{tool_name} has no parameter(s) {', '.join(unknown)}; "
                            f"it takes {', '.join(sorted(tool.params))}")
    for key in tool.required:
        if key not in values:
            job.problems.append(f"{key} is required for {tool_name}")
    for key, param in tool.params.items():
        if key not in values:
            continue
        value = values[key]
        if param.kind in (RASTER, MODEL, OUTPUT):
            text = os.path.expanduser(str(value).strip())
            job.kwargs[param.keyword] = os.path.normpath(os.path.join(base_dir, text))
            continue
        try:
            job.kwargs[param.keyword] = param.convert(value)
        except (TypeError, ValueError) as exc:
            job.problems.append(f"{key}: {exc}")
    merged = {**tool.spec.defaults(), **job.kwargs}
    for option in tool.spec.all_options():        # ranges and choices, as the job would refuse them
        if option.keyword in job.kwargs and tools.holds(option.when, merged):
            problem = option.problem(job.kwargs[option.keyword])
            if problem:
                job.problems.append(f"{option.param}: {problem}")
    if "SPLIT" in values:
        text = str(values["SPLIT"]).strip().lower()
        try:
            job.split = "auto" if text == "auto" else _int(text)
            if job.split != "auto" and job.split < 1:
                raise ValueError
        except ValueError:
            job.problems.append(f"SPLIT: expected a number of row bands >= 1 or 'auto', got {values['SPLIT']!r}")
    output = job.kwargs.get("output")
    job.name = job.name or (os.path.splitext(os.path.basename(output))[0] if output else f"row{row}")
    return job


def read_manifest(path: str) -> List[Job]:
    """Parse a CSV or JSON-lines manifest into jobs (problems kept on each job)."""
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ManifestError(f"manifest not found: {path}")
    base = os.path.dirname(path)
    ext = os.path.splitext(path)[1].lower()
    with open(path, newline="", encoding="utf-8-sig") as f:
        if ext in (".jsonl", ".ndjson", ".json"):
            return _read_json_lines(f, path, base)
        if ext in (".csv", ".txt"):
            return _read_csv(f, path, base)
    raise ManifestError(f"{path}: manifest must be .csv or .jsonl (JSON lines), not {ext or 'no extension'}")


def _read_csv(f, path: str, base: str) -> List[Job]:
    lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines, skipinitialspace=True)
    if not reader.fieldnames or "tool" not in [n.strip().lower() for n in reader.fieldnames]:
        raise ManifestError(f"{path}: the first row must be a header naming the columns, with a 'tool' column")
    jobs = []
    for i, raw in enumerate(reader, start=1):
        extra = raw.pop(None, None)
        job = parse_row(i, {k.strip(): v for k, v in raw.items() if k}, base)
        if extra:
            job.problems.append(f"{len(extra)} more value(s) than header columns: {extra}")
        jobs.append(job)
    return jobs


def _read_json_lines(f, path: str, base: str) -> List[Job]:
    jobs = []
    for number, line in enumerate(f, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            job = Job(number, f"line{number}", "", {})
            job.problems.append(f"not a JSON object ({exc})")
            jobs.append(job)
            continue
        flat = {k: v for k, v in raw.items() if k not in ("inputs", "options")}
        for group in ("inputs", "options"):
            if isinstance(raw.get(group), dict):
                flat.update(raw[group])
        jobs.append(parse_row(number, flat, base))
    return jobs


def jobs_from_rows(rows: Sequence[Dict[str, Any]], base_dir: str = ".") -> List[Job]:
    """Jobs from in-memory rows (the Python API's manifest)."""
    return [parse_row(i, dict(r), os.path.abspath(base_dir)) for i, r in enumerate(rows, start=1)]


def write_manifest(rows: Sequence[Dict[str, Any]], path: str) -> str:
    """Write rows (dicts of parameter -> value) as a CSV or JSON-lines manifest."""
    if path.lower().endswith((".jsonl", ".ndjson", ".json")):
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        return path
    columns: List[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v) for k, v in r.items()})
    return path
