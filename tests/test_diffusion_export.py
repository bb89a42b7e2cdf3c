"""Exported DE graphs (tiny, random weights): valid cards, and the plugin's numpy sampler
(onnxruntime, no torch) gives the torch sampler's result for the same noise sequence."""
import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)
ort = pytest.importorskip("onnxruntime")

from skyclear.models.common.run import RunDir  # noqa: E402
from skyclear.models.diffusion import gaussian  # noqa: E402
from skyclear.models.diffusion.data import find_pairs, read_image, to_net  # noqa: E402
from skyclear.models.diffusion.reference import build_reference  # noqa: E402
from skyclear.models.diffusion.splits import HELD_OUT  # noqa: E402
from skyclear.models.diffusion.trainer import export  # noqa: E402
from skyclear.models.diffusion.unet import ConditionalNoisePredictor, StepNet, WeightAllocationNet  # noqa: E402
from skyclear.plugin.core.model_card import read_card  # noqa: E402
from skyclear.plugin.core.pipelines.optical_cloud_removal import (DiffusionProcessor, ReferenceProcessor,  # noqa: E402
                                                                  tile_noise)

from factories import jittered  # noqa: E402


@pytest.fixture(scope="module")
def exported(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("de_export")
    data = str(data_dir / "rice1")
    torch.manual_seed(0)
    ref = jittered(build_reference({"channels": 8, "blocks": 1}, 3))
    cnp = jittered(ConditionalNoisePredictor(3, {"preset": "cnp-tiny"}))
    wa = jittered(WeightAllocationNet(3, {"preset": "wa-tiny"}))
    ref_run, step_run = RunDir(str(tmp / "ref")), RunDir(str(tmp / "joint"))
    ref_run.save_config({"kind": "de-reference", "bands": 3, "reference": {"channels": 8, "blocks": 1}, "data": data})
    ref_run.save_checkpoint(1, {"models": {"reference": ref.state_dict()}})
    step_run.save_config({"kind": "de-joint", "bands": 3, "cnp": {"preset": "cnp-tiny"}, "wa": {"preset": "wa-tiny"},
                          "diffusion": {"T": 1000, "beta_start": 1e-4, "beta_end": 0.02}, "eta": 0.3,
                          "reference_run": str(tmp / "ref"), "data": data})
    step_run.save_checkpoint(1, {"models": {"cnp": cnp.state_dict(), "wa": wa.state_dict()}})
    args = argparse.Namespace(sample=None, size=64)
    export(str(tmp / "ref"), str(tmp / "ref.onnx"), args)
    export(str(tmp / "joint"), str(tmp / "step.onnx"), args)
    pair = [p for p in find_pairs(data) if p.pair_id == HELD_OUT["rice1"][0]][0]
    y = to_net(read_image(pair.cloudy))[:, :64, :128]
    y = np.stack([y[:, :, :64], y[:, :, 64:]])            # two real 64x64 tiles
    return {"ref": ref, "step": StepNet(cnp, wa).eval(), "ref_path": str(tmp / "ref.onnx"),
            "step_path": str(tmp / "step.onnx"), "y": y, "tmp": tmp}


def _session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def test_cards(exported):
    ref_card, step_card = read_card(exported["ref_path"]), read_card(exported["step_path"])
    assert ref_card.task == "optical_cloud_removal_reference"
    assert [t.name for t in ref_card.inputs] == ["cloudy"] and [t.name for t in ref_card.outputs] == ["restored"]
    b = ref_card.input("cloudy").bands[0]
    assert (b.clip, b.offset, b.scale) == ([0.0, 255.0], 127.5, 127.5)
    assert ref_card.output("restored").dtype is None
    assert step_card.task == "optical_cloud_removal_diffusion_step"
    assert [t.name for t in step_card.inputs] == ["x_t", "t", "cloudy", "reference"]
    assert [t.name for t in step_card.outputs] == ["eps", "weight"]
    assert step_card.extra["T"] == 1000 and step_card.extra["eta"] == 0.3
    assert step_card.extra["beta_start"] == 1e-4 and step_card.extra["beta_end"] == 0.02
    t_input = [i for i in _session(exported["step_path"]).get_inputs() if i.name == "t"][0]
    assert len(t_input.shape) == 1 and t_input.type == "tensor(float)"
    md = (exported["tmp"] / "step.md").read_text()
    assert "optical_cloud_removal_diffusion_step" in md


def test_reference_processor_matches_torch(exported):
    y = exported["y"]
    got = ReferenceProcessor(_session(exported["ref_path"]))({"cloudy": y}, [(0, 0), (0, 64)])["restored"]
    with torch.no_grad():
        want = exported["ref"](torch.from_numpy(y)).numpy()
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_numpy_sampler_matches_torch_sampler(exported, sampler):
    y = exported["y"]
    origins = [(0, 0), (0, 64)]
    proc = DiffusionProcessor(_session(exported["ref_path"]), _session(exported["step_path"]), steps=8, eta=0.3,
                              seed=7, sampler=sampler)
    got = proc({"cloudy": y}, origins)["restored"]
    per_tile = [tile_noise(7, o, y.shape[1:], 9) for o in origins]
    noise = [torch.from_numpy(np.stack([t[i] for t in per_tile])) for i in range(9)]
    yt = torch.from_numpy(y)
    with torch.no_grad():
        x0_ref = exported["ref"](yt)
    step = lambda x, t: exported["step"](x, t, yt, x0_ref)
    want = gaussian.sample(step, x0_ref, noise, steps=8, eta=0.3, sampler=sampler).numpy()
    assert np.abs(got - want).max() < 1e-3
    assert np.abs(got - y).max() > 1e-3  # did something


def test_same_output_whatever_the_batching_and_seeded(exported):
    y = exported["y"]
    ref_s, step_s = _session(exported["ref_path"]), _session(exported["step_path"])
    proc = DiffusionProcessor(ref_s, step_s, steps=4, seed=1)
    both = proc({"cloudy": y}, [(0, 0), (0, 64)])["restored"]
    second = proc({"cloudy": y[1:]}, [(0, 64)])["restored"]
    assert np.abs(both[1] - second[0]).max() < 1e-5
    again = DiffusionProcessor(ref_s, step_s, steps=4, seed=1)({"cloudy": y}, [(0, 0), (0, 64)])["restored"]
    assert np.array_equal(both, again)
    other = DiffusionProcessor(ref_s, step_s, steps=4, seed=2)({"cloudy": y}, [(0, 0), (0, 64)])["restored"]
    assert np.abs(other - both).max() > 1e-4
    with pytest.raises(ValueError):
        DiffusionProcessor(ref_s, step_s, steps=0)
    # the IOBinding path (used on CUDA) gives the same result; exercised here on the CPU provider
    bound = DiffusionProcessor(ref_s, step_s, steps=4, seed=1, iobinding=True)
    assert bound.iobinding and bound.device == "cpu"
    assert np.abs(bound({"cloudy": y}, [(0, 0), (0, 64)])["restored"] - both).max() < 1e-6


def test_engine_runs_both_modes_and_batching_does_not_matter(exported, data_dir, tmp_path):
    """Through the streaming engine on a real non-georeferenced uint8 image: the output keeps
    the input's grid and dtype, and DE output does not depend on the engine's batch size."""
    rasterio = pytest.importorskip("rasterio")
    from skyclear.plugin.core.engine import open_sources, run_tiled

    card = read_card(exported["ref_path"])
    src = str(data_dir / "thin_cloud" / "pna_9_cloudy.tif")
    ref_s, step_s = _session(exported["ref_path"]), _session(exported["step_path"])
    outs = {}
    for name, proc, batch in (("reference", ReferenceProcessor(ref_s), 4),
                              ("de_b1", DiffusionProcessor(ref_s, step_s, steps=2, seed=3), 1),
                              ("de_b8", DiffusionProcessor(ref_s, step_s, steps=2, seed=3), 8)):
        path = str(tmp_path / f"{name}.tif")
        run_tiled(card, open_sources(card, {"cloudy": src}), proc, {"restored": path}, tile_size=128, overlap=32,
                  batch_size=batch)
        with rasterio.open(path) as out, rasterio.open(src) as inp:
            assert out.dtypes == inp.dtypes and out.shape == inp.shape and out.count == inp.count
            assert out.transform == inp.transform
            outs[name] = out.read().astype(int)
    assert np.abs(outs["de_b1"] - outs["de_b8"]).max() <= 1
    assert np.abs(outs["de_b1"] - outs["reference"]).max() > 0
