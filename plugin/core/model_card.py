"""Model cards: the contract every SkyClear ONNX file carries in its ``metadata_props``.

The card is stored as one metadata entry, ``skyclear.card``, whose value is a JSON
object (schema below, ``schema_version`` 1). Keeping it inside the ONNX file means a
model can never be separated from the preprocessing it was trained with.

Band preprocessing maps a raster value ``v`` to the network value
``(clip(v, clip[0], clip[1]) - offset) / scale``; output postprocessing is the inverse,
``x * scale + offset``, then clipped to ``clip`` and cast to the output ``dtype``.
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from .errors import ModelCardError

METADATA_KEY = "skyclear.card"
SCHEMA_VERSION = 1

TASKS = (
    "generic",
    "sar_cloud_removal",
    "optical_cloud_removal_reference",
    "optical_cloud_removal_diffusion_step",
    "sar_optical_fusion",
)
ROLES = ("optical", "sar", "auxiliary")
DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
RESAMPLING = ("nearest", "bilinear", "cubic", "average")


@dataclass(frozen=True)
class BandSpec:
    name: str
    meaning: str = ""
    clip: Optional[List[float]] = None
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: its ONNX name, raster role and bands."""

    name: str
    bands: List[BandSpec]
    role: str = "optical"
    dtype: Optional[str] = None          # outputs: file dtype; None = the optical input's dtype
    nodata: Optional[float] = None       # outputs: value written where inputs are nodata
    resampling: str = "bilinear"         # inputs: how an input on another grid is aligned
    dtypes: Optional[List[str]] = None   # inputs: raster dtypes accepted (None = any)
    description: str = ""

    @property
    def band_names(self) -> List[str]:
        return [b.name for b in self.bands]


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    task: str
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    tile_size: int
    size_multiple: int
    default_overlap: int
    description: str = ""
    training: Dict[str, Any] = field(default_factory=dict)
    license: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, "input")

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, "output")

    def inputs_with_role(self, role: str) -> List[TensorSpec]:
        return [t for t in self.inputs if t.role == role]

    @property
    def sha256(self) -> str:
        """Hash of the canonical card JSON, written into output provenance."""
        return card_hash(self.raw)

    def to_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(self.raw)


def _by_name(specs: List[TensorSpec], name: str, kind: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise ModelCardError(f"model card has no {kind} named '{name}' (has: {[s.name for s in specs]})")


def card_hash(card: Dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(card, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# validation


def _fail(key: str, problem: str, fix: str) -> None:
    raise ModelCardError(f"model card key '{key}': {problem}. Fix: {fix}")


def _require(obj: Dict[str, Any], key: str, path: str, types, fix: str):
    if key not in obj:
        _fail(f"{path}{key}", "missing", fix)
    value = obj[key]
    if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
        _fail(f"{path}{key}", f"expected {_type_names(types)}, got {type(value).__name__}", fix)
    return value


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _type_names(types) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))


def _parse_band(band: Any, path: str) -> BandSpec:
    if isinstance(band, str):
        return BandSpec(name=band)
    if not isinstance(band, dict):
        _fail(path, "a band must be a name or an object", 'write {"name": "B4", "clip": [0, 10000], "scale": 10000}')
    name = _require(band, "name", path + ".", str, "give every band a name, e.g. \"B4\" or \"VV\"")
    clip = band.get("clip")
    if clip is not None:
        if (not isinstance(clip, list) or len(clip) != 2
                or not all(isinstance(v, (int, float)) for v in clip) or clip[0] >= clip[1]):
            _fail(path + ".clip", f"expected [low, high] with low < high, got {clip!r}", "write e.g. [0, 10000]")
    scale = band.get("scale", 1.0)
    if not isinstance(scale, (int, float)) or scale == 0:
        _fail(path + ".scale", f"must be a non-zero number, got {scale!r}", "use 1 for no scaling")
    offset = band.get("offset", 0.0)
    if not isinstance(offset, (int, float)):
        _fail(path + ".offset", f"must be a number, got {offset!r}", "use 0 for no offset")
    return BandSpec(name=name, meaning=str(band.get("meaning", "")),
                    clip=[float(v) for v in clip] if clip else None,
                    scale=float(scale), offset=float(offset))


def _parse_tensor(obj: Any, path: str, is_output: bool) -> TensorSpec:
    if not isinstance(obj, dict):
        _fail(path, "must be an object", "see `python -m skyclear.models.card example`")
    name = _require(obj, "name", path + ".", str, "use the ONNX graph's tensor name")
    bands = _require(obj, "bands", path + ".", list, "list the bands in tensor channel order")
    if not bands:
        _fail(path + ".bands", "is empty", "list at least one band")
    role = obj.get("role", "optical")
    if role not in ROLES:
        _fail(path + ".role", f"unknown role {role!r}", f"use one of {ROLES}")
    dtype = obj.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        _fail(path + ".dtype", f"unknown dtype {dtype!r}", f"use one of {DTYPES} or leave it out")
    resampling = obj.get("resampling", "bilinear")
    if resampling not in RESAMPLING:
        _fail(path + ".resampling", f"unknown method {resampling!r}", f"use one of {RESAMPLING}")
    dtypes = obj.get("dtypes")
    if dtypes is not None and (not isinstance(dtypes, list) or not set(dtypes) <= set(DTYPES)):
        _fail(path + ".dtypes", f"must be a list drawn from {DTYPES}, got {dtypes!r}", "list the accepted raster dtypes or leave it out")
    nodata = obj.get("nodata")
    if nodata is not None and not isinstance(nodata, (int, float)):
        _fail(path + ".nodata", f"must be a number, got {nodata!r}", "use e.g. 0, or leave it out")
    return TensorSpec(
        name=name,
        bands=[_parse_band(b, f"{path}.bands[{i}]") for i, b in enumerate(bands)],
        role=role, dtype=dtype, nodata=nodata, resampling=resampling, dtypes=dtypes,
        description=str(obj.get("description", "")),
    )


def parse_card(card: Any) -> ModelCard:
    """Validate a card dict and return it typed. Errors name the key and the fix."""
    if not isinstance(card, dict):
        raise ModelCardError("model card must be a JSON object")
    version = _require(card, "schema_version", "", int, f"set \"schema_version\": {SCHEMA_VERSION}")
    if version != SCHEMA_VERSION:
        _fail("schema_version", f"version {version} is not supported by this SkyClear",
              f"re-export the model with schema_version {SCHEMA_VERSION} or update SkyClear")
    name = _require(card, "name", "", str, "give the model a short name, e.g. \"ibhfn-small\"")
    model_version = _require(card, "version", "", str, "give a version string, e.g. \"1.0.0\"")
    task = _require(card, "task", "", str, f"use one of {TASKS}")
    if task not in TASKS:
        _fail("task", f"unknown task {task!r}", f"use one of {TASKS}")
    inputs = _require(card, "inputs", "", list, "list the model inputs")
    outputs = _require(card, "outputs", "", list, "list the model outputs")
    if not inputs:
        _fail("inputs", "is empty", "list at least one input")
    if not outputs:
        _fail("outputs", "is empty", "list at least one output")
    tiling = _require(card, "tiling", "", dict, 'add {"tile_size": 256, "size_multiple": 8, "default_overlap": 32}')
    tile_size = _require(tiling, "tile_size", "tiling.", int, "the native tile size in pixels, e.g. 256")
    multiple = _require(tiling, "size_multiple", "tiling.", int, "the size the network needs tiles to divide by, e.g. 8")
    overlap = _require(tiling, "default_overlap", "tiling.", int, "the default overlap in pixels, e.g. 32")
    if multiple < 1 or tile_size < multiple or tile_size % multiple:
        _fail("tiling.tile_size", f"{tile_size} is not a positive multiple of size_multiple {multiple}",
              "make tile_size a multiple of size_multiple")
    if not 0 <= overlap < tile_size:
        _fail("tiling.default_overlap", f"{overlap} must be in [0, tile_size)", "use e.g. tile_size // 8")
    training = card.get("training", {})
    if not isinstance(training, dict):
        _fail("training", "must be an object", 'write e.g. {"data": "...", "steps": 1000, "metrics": {}}')
    license_ = card.get("license", "")
    if not isinstance(license_, str):
        _fail("license", "must be a string", "write e.g. \"CC-BY-4.0\"")
    in_specs = [_parse_tensor(t, f"inputs[{i}]", False) for i, t in enumerate(inputs)]
    out_specs = [_parse_tensor(t, f"outputs[{i}]", True) for i, t in enumerate(outputs)]
    for specs, kind in ((in_specs, "inputs"), (out_specs, "outputs")):
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            _fail(kind, f"duplicate tensor names {names}", "give each tensor a unique name")
    known = {"schema_version", "name", "version", "task", "inputs", "outputs", "tiling",
             "training", "license", "description", "extra"}
    unknown = sorted(set(card) - known)
    if unknown:
        _fail(unknown[0], "unknown key", f"remove it or move it under \"extra\" (allowed: {sorted(known)})")
    return ModelCard(
        name=name, version=model_version, task=task, inputs=in_specs, outputs=out_specs,
        tile_size=tile_size, size_multiple=multiple, default_overlap=overlap,
        description=str(card.get("description", "")), training=training, license=license_,
        extra=dict(card.get("extra", {})), raw=copy.deepcopy(card),
    )


# ---------------------------------------------------------------------------------------
# reading and writing ONNX files


def read_card(path: str, check_graph: bool = True) -> ModelCard:
    """Read and validate the card of an ONNX file (needs only onnxruntime). ``check_graph=False``
    reads the metadata straight from the file without building an inference session (milliseconds
    instead of ~0.15 s per model; for listing files already checked, such as the bundled ones)."""
    if not os.path.isfile(path):
        raise ModelCardError(f"model file not found: {path}")
    if not check_graph:
        try:
            meta = onnx_metadata(path)
        except (OSError, ValueError) as exc:
            raise ModelCardError(f"{path} is not a readable ONNX model: {exc}") from exc
        return _card_from_metadata(meta, path)
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - install problem
        raise ModelCardError("onnxruntime is not installed: pip install onnxruntime") from exc
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelCardError(f"{path} is not a readable ONNX model: {exc}") from exc
    return card_from_session(session, path)


def card_from_session(session, path: str = "model") -> ModelCard:
    card = _card_from_metadata(session.get_modelmeta().custom_metadata_map, path)
    _check_against_graph(card, session, path)
    return card


def _card_from_metadata(meta: Dict[str, str], path: str) -> ModelCard:
    if METADATA_KEY not in meta:
        raise ModelCardError(
            f"{path} has no SkyClear model card (metadata key '{METADATA_KEY}'). "
            "Fix: write one with `python -m skyclear.models.card write MODEL.onnx CARD.json`")
    try:
        card_dict = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{path}: model card is not valid JSON ({exc})") from exc
    try:
        return parse_card(card_dict)
    except ModelCardError as exc:
        if path in str(exc):
            raise
        raise ModelCardError(f"{path}: {exc}") from exc


def onnx_metadata(path: str) -> Dict[str, str]:
    """``ModelProto.metadata_props`` (field 14) read from the protobuf wire format, seeking past
    the graph and its weights. Raises ``ValueError`` for a file that is not such a message."""
    size = os.path.getsize(path)
    props: Dict[str, str] = {}
    has_graph = False
    with open(path, "rb") as f:
        while f.tell() < size:
            field_number, wire = divmod(_varint(f), 8)
            if field_number == 0:
                raise ValueError("not a protobuf message")
            has_graph |= field_number == 7
            if wire == 0:
                _varint(f)
            elif wire in (1, 5):
                f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
            elif wire == 2:
                length = _varint(f)
                if f.tell() + length > size:
                    raise ValueError("truncated file")
                if field_number == 14:
                    entry = _string_fields(f.read(length))
                    props[entry.get(1, "")] = entry.get(2, "")
                else:
                    f.seek(length, os.SEEK_CUR)
            else:
                raise ValueError(f"unexpected protobuf wire type {wire}")
        if f.tell() != size:
            raise ValueError("truncated file")
    if not has_graph:
        raise ValueError("no graph in the file")
    return props


def _varint(f) -> int:
    value, shift = 0, 0
    while True:
        byte = f.read(1)
        if not byte:
            raise ValueError("truncated file")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _string_fields(message: bytes) -> Dict[int, str]:
    """The length-delimited fields of a small message (StringStringEntryProto: 1 key, 2 value)."""
    f, fields = io.BytesIO(message), {}
    while f.tell() < len(message):
        field_number, wire = divmod(_varint(f), 8)
        if wire != 2:
            raise ValueError("metadata entry is not a key/value pair")
        length = _varint(f)
        data = f.read(length)
        if len(data) != length:
            raise ValueError("truncated metadata entry")
        fields[field_number] = data.decode("utf-8")
    return fields


def _check_against_graph(card: ModelCard, session, path: str) -> None:
    """The card must describe the graph it sits in: names and channel counts."""
    graph_inputs = {i.name: i.shape for i in session.get_inputs()}
    graph_outputs = {o.name: o.shape for o in session.get_outputs()}
    for specs, graph, kind in ((card.inputs, graph_inputs, "inputs"), (card.outputs, graph_outputs, "outputs")):
        for i, spec in enumerate(specs):
            if spec.name not in graph:
                raise ModelCardError(
                    f"{path}: card key '{kind}[{i}].name' is '{spec.name}' but the graph's {kind} are "
                    f"{sorted(graph)}. Fix: use the graph's tensor names in the card")
            shape = graph[spec.name]
            if len(shape) == 4 and isinstance(shape[1], int) and shape[1] != len(spec.bands):
                raise ModelCardError(
                    f"{path}: card key '{kind}[{i}].bands' lists {len(spec.bands)} bands but the graph "
                    f"tensor '{spec.name}' has {shape[1]} channels. Fix: list one band per channel")


def write_card(onnx_path: str, card: Dict[str, Any], out_path: Optional[str] = None) -> ModelCard:
    """Validate ``card`` and store it in the ONNX file (needs the ``onnx`` package)."""
    parsed = parse_card(card)
    import onnx

    model = onnx.load(onnx_path)
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(card, sort_keys=True)
    onnx.save(model, out_path or onnx_path)
    return parsed


def band(name: str, meaning: str = "", clip=None, scale: float = 1.0, offset: float = 0.0) -> Dict[str, Any]:
    """Build one band entry for a card dict."""
    entry: Dict[str, Any] = {"name": name, "scale": scale, "offset": offset}
    if meaning:
        entry["meaning"] = meaning
    if clip is not None:
        entry["clip"] = [float(clip[0]), float(clip[1])]
    return entry
