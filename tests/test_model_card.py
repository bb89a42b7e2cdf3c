"""Model cards: validation names the key and the fix; cards round-trip through ONNX files."""
import json
import re
import subprocess
import sys

import pytest

from factories import base_card, identity_model
from skyclear.plugin.core.errors import ModelCardError
from skyclear.plugin.core.model_card import onnx_metadata, parse_card, read_card


def test_round_trip(tmp_path):
    path = identity_model(str(tmp_path / "m.onnx"), 3)
    card = read_card(path)
    assert card.task == "generic" and card.inputs[0].band_names == ["B1", "B2", "B3"]
    assert len(card.sha256) == 64


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c.pop("task"), "'task'"),
    (lambda c: c.update(task="nope"), "'task'"),
    (lambda c: c.update(schema_version=99), "'schema_version'"),
    (lambda c: c["tiling"].update(tile_size=60, size_multiple=8), "'tiling.tile_size'"),
    (lambda c: c["inputs"][0]["bands"][0].update(clip=[5, 1]), "'inputs[0].bands[0].clip'"),
    (lambda c: c["outputs"][0].update(dtype="complex"), "'outputs[0].dtype'"),
    (lambda c: c.update(surprise=1), "'surprise'"),
])
def test_invalid_cards_name_the_key(mutate, key):
    card = base_card(["B1"], ["B1"])
    mutate(card)
    with pytest.raises(ModelCardError, match=re.escape(key)) as info:
        parse_card(card)
    assert "Fix:" in str(info.value)


def test_card_must_match_graph(tmp_path):
    card = base_card(["B1", "B2"], ["B1", "B2"])  # graph has 3 channels
    with pytest.raises(ModelCardError, match="3 channels"):
        identity_model(str(tmp_path / "m.onnx"), 3, card=card)
        read_card(str(tmp_path / "m.onnx"))


def test_missing_card_and_bad_file(tmp_path):
    import onnx

    path = identity_model(str(tmp_path / "m.onnx"), 3)
    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.save(model, path)
    with pytest.raises(ModelCardError, match="no SkyClear model card"):
        read_card(path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelCardError, match="not a readable ONNX model"):
        read_card(str(junk))


def test_metadata_read_without_a_session_matches_onnxruntime(tmp_path):
    """The zoo lists cards from the file's metadata alone (no session per model): the same entries
    onnxruntime sees, and the same clear errors for a file that is not a model."""
    import onnx
    import onnxruntime as ort

    from skyclear.plugin.core.zoo import bundled_models

    path = identity_model(str(tmp_path / "m.onnx"), 3)
    model = onnx.load(path)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "note": "é" * 300})
    onnx.save(model, path)
    paths = [path] + [p for p, _ in bundled_models()]
    assert len(paths) > 1
    for p in paths:
        session = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
        assert onnx_metadata(p) == session.get_modelmeta().custom_metadata_map
        assert read_card(p, check_graph=False) == read_card(p)
    data = open(path, "rb").read()
    for name, content in (("cut.onnx", data[:-40]), ("junk.onnx", b"not a model"), ("empty.onnx", b""),
                          ("zeros.onnx", bytes(1000))):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelCardError, match="not a readable ONNX model"):
            read_card(str(tmp_path / name), check_graph=False)
    del model.metadata_props[:]
    onnx.save(model, path)
    with pytest.raises(ModelCardError, match="no SkyClear model card"):
        read_card(path, check_graph=False)


def test_card_cli(tmp_path):
    path = identity_model(str(tmp_path / "m.onnx"), 3)
    shown = subprocess.run([sys.executable, "-m", "skyclear.models.card", "show", path],
                           capture_output=True, text=True, check=True)
    assert json.loads(shown.stdout)["name"] == "test-model"
    ok = subprocess.run([sys.executable, "-m", "skyclear.models.card", "validate", path],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "skyclear.models.card", "validate", str(tmp_path / "none.onnx")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "not found" in bad.stderr
