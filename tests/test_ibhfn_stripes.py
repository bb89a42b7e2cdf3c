"""Stripes and SAR structure: the detectors, and the bundled SAR cloud-removal models.

The vertical stripes of IB-HFN 1.x are a period-2 pattern tied to the network's own frame
(transposing the input does not transpose them), fed by the full-resolution optical skip of
the last decoder stage and rewarded by the 1.x "ratio" sharpness loss (see
``models/ibhfn/losses.py``). ``stripe_index`` measures exactly that: image content turns
with the input, a frame-tied pattern does not.
"""
from pathlib import Path

import numpy as np
import pytest

from skyclear.models.ibhfn.evaluate import hf_anisotropy, sar_edge_correlation, stripe_index

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "sen12mscr"
needs_data = pytest.mark.skipif(not (DATA / "oriolac_5278" / "s1.tif").exists(), reason="shared data absent")


def _texture(seed=0, size=64):
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(seed)
    return np.stack([gaussian_filter(rng.random((size, size)), 1.0) for _ in range(13)]).astype(np.float32) * 0.3


def test_stripe_index_sees_frame_tied_stripes_not_content():
    opt, sar = _texture(0), _texture(1)[:2]
    stripe = 0.02 * (-1.0) ** np.arange(64)[None, None, :]
    assert abs(stripe_index(lambda o, s: o.copy(), opt, sar)) < 1e-6          # identity
    assert abs(stripe_index(lambda o, s: o * 0.8 + 0.01, opt, sar)) < 1e-6    # any pointwise model
    # an input that itself has vertical stripes: content, it turns with the input -> index ~ 0
    striped_input = opt + stripe
    assert hf_anisotropy(striped_input) > 1.0
    assert abs(stripe_index(lambda o, s: o.copy(), striped_input, sar)) < 1e-6
    # a model that adds vertical stripes in its own frame -> large positive index
    assert stripe_index(lambda o, s: o + stripe, opt, sar) > 1.0
    assert stripe_index(lambda o, s: o + stripe.transpose(0, 2, 1), opt, sar) < -1.0


def test_column_mean_spectrum_of_flat_area():
    """The column-mean profile of a flat area shows a phase-locked stripe at Nyquist; row means do not."""
    flat = np.full((13, 64, 64), 0.2, np.float32)
    out = flat + 0.01 * (-1.0) ** np.arange(64)[None, None, :]
    col = np.abs(np.fft.rfft(out[3].mean(0) - out[3].mean()))
    row = np.abs(np.fft.rfft(out[3].mean(1) - out[3].mean()))
    assert col[-1] > 100 * (row[-1] + 1e-6)


def test_sar_edge_correlation():
    rng = np.random.default_rng(0)
    sar = np.full((2, 64, 64), 0.3, np.float32)
    sar[:, :, 20:24] = 0.9                                   # a road in the SAR
    sar[:, 40:, :] += 0.2                                    # a field edge
    sar += rng.normal(0, 0.02, sar.shape).astype(np.float32)  # speckle
    mask = np.ones((64, 64), bool)
    with_structure = np.repeat(sar[:1] * 0.3, 13, 0)
    blob = np.full((13, 64, 64), 0.3, np.float32) + rng.normal(0, 0.002, (13, 64, 64)).astype(np.float32)
    assert sar_edge_correlation(with_structure, sar, mask) > 0.8
    assert abs(sar_edge_correlation(blob, sar, mask)) < 0.2
    assert np.isnan(sar_edge_correlation(blob, sar, np.zeros((64, 64), bool)))


def _onnx_predictor(name):
    ort = pytest.importorskip("onnxruntime")
    from skyclear.plugin.core.model_card import read_card
    from skyclear.plugin.core.pipelines.sar_cloud_removal import SarCloudRemovalProcessor
    path = REPO / "models" / "zoo" / name
    if not path.exists():
        pytest.skip(f"{name} not bundled")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    card = read_card(str(path))
    proc = SarCloudRemovalProcessor(ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), card)
    return card, lambda o, s: proc({"optical": o[None], "sar": s[None]}, [(0, 0)])["restored"][0]


# held-out, cloudy samples on which IB-HFN 1.1.0 shows the stripes (index 2.4 and 2.3)
STRIPE_SAMPLES = ("oriolac_5278", "oriolac_6317")


@needs_data
@pytest.mark.parametrize("name", ["ibhfn_small.onnx", "dsen2cr_small.onnx"])
def test_bundled_model_has_no_frame_tied_stripes(name, request):
    from skyclear.models.ibhfn.data import find_samples, load_sample
    card, predict = _onnx_predictor(name)
    if name == "ibhfn_small.onnx" and card.version.startswith("1."):
        # known defect of the 1.x recipe (issue 10); this must pass once the 2.x model ships
        request.applymarker(pytest.mark.xfail(strict=True, reason="IB-HFN 1.x has vertical stripes"))
    files = {f.id: f for f in find_samples(str(DATA))}
    for sid in STRIPE_SAMPLES:
        s = load_sample(files[sid])
        assert abs(stripe_index(predict, s.cloudy, s.sar)) < 0.7, sid
