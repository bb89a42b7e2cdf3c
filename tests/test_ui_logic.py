"""QGIS-free decisions of the dialog: plausible layers, band mapping, model/task fit, tiles."""
import pytest

from skyclear.plugin.core.model_card import parse_card
from skyclear.plugin.core.tiling import TileGrid
from skyclear.ui import logic

from factories import base_card

S2 = list(logic.S2_BANDS)


def info(name, count, is_float, descriptions=()):
    return logic.LayerInfo(name, "/x/" + name, count, is_float, list(descriptions) or [""] * count)


def test_plausible_layers():
    s2 = info("s2.tif", 13, False, S2)
    l2a = info("l2a.tif", 12, False, [b for b in S2 if b != "B10"])
    s1 = info("s1.tif", 2, True, ["VV", "VH"])
    rgb = info("rgb.tif", 3, False)
    optical = sorted([s1, rgb, l2a, s2], key=lambda i: logic.plausibility(i, "optical", S2), reverse=True)
    assert optical[0] is s2 and optical[-1] is s1
    sar = sorted([s2, rgb, s1], key=lambda i: logic.plausibility(i, "sar", ["VV", "VH"]), reverse=True)
    assert sar[0] is s1


def test_band_mapping_by_name_position_and_alias():
    assert logic.default_band_mapping(S2, S2, 13) == list(range(1, 14))
    assert logic.default_band_mapping(["B4", "B3", "B2"], S2, 13) == [4, 3, 2]
    assert logic.default_band_mapping(["R", "G", "B"], S2, 13) == [4, 3, 2]          # aliases
    assert logic.default_band_mapping(["R", "G", "B"], ["", "", ""], 3) == [1, 2, 3]   # by position
    l2a = [b for b in S2 if b != "B10"]
    mapping = logic.default_band_mapping(S2, l2a, 12)                                # B10 missing
    assert mapping[9] == 10 and mapping[10] is None and mapping[11] == 11   # B9, B10, B11
    problem = logic.band_problem("Optical", S2, mapping, 12)
    assert "no raster band chosen for B10 (the raster has 12 band(s), the model expects 13" in problem
    assert logic.band_problem("Optical", ["B1"], [3], 2) == "Optical: band(s) [3] do not exist (the raster has 2)"
    assert logic.band_problem("Optical", S2, list(range(1, 14)), 13) is None


def test_card_fit_and_refusal_message():
    card = parse_card(base_card(["B1"], ["B1"], task="optical_cloud_removal_diffusion_step"))
    assert logic.check_card_for_task(card, "optical_cloud_removal", step=True) is None
    refusal = logic.check_card_for_task(card, "optical_cloud_removal")
    assert "diffusion step" in refusal and "reference network" in refusal
    refusal = logic.check_card_for_task(card, "custom")
    assert "Remove clouds (diffusion)" in refusal                  # tells where it belongs
    generic = parse_card(base_card(["B1"], ["B1"]))
    assert logic.check_card_for_task(generic, "custom") is None
    assert "SAR-assisted cloud removal" in logic.check_card_for_task(generic, "sar_cloud_removal")
    assert "is a generic model" in logic.check_card_for_task(generic, "sar_cloud_removal")
    assert "is an optical cloud removal" in logic.check_card_for_task(card, "custom")   # not "a optical"
    html = logic.card_summary_html(generic, "/m.onnx")
    for text in ("test-model", "Training data: synthetic test", "License: CC0-1.0", "Held-out metrics"):
        assert text in html


@pytest.mark.parametrize("w,h,tile,overlap", [(264, 264, 64, 8), (1068, 1068, 512, 64), (10, 700, 128, 0),
                                              (512, 512, 512, 64), (513, 100, 256, 32)])
def test_tile_count_matches_engine(w, h, tile, overlap):
    assert logic.tile_count(w, h, tile, overlap) == len(TileGrid(h, w, tile, overlap))


def test_estimate_text():
    est = logic.estimate(10980, 10980, 512, 64, 15, 14, 0.8, model_mb=20, repeats=11)
    assert est.tiles == len(TileGrid(10980, 10980, 512, 64))
    assert est.total_seconds == pytest.approx(est.tiles * 0.8 * 11)
    assert "h" in est.text() or "min" in est.text()
    assert 100 < est.memory_mb < 4000
    assert "measuring one tile" in logic.estimate(100, 100, 64, 8, 3, 3, None).text()
    assert logic.estimate(60, 60, 64, 8, 3, 3, 0.05).text().startswith("1 tile; ")       # not "1 tile(s)"
    assert "(50 ms per tile)" in logic.estimate(60, 60, 64, 8, 3, 3, 0.05).text()


def test_value_range_warnings():
    assert "8-bit" in logic.value_range_problem("optical", "de", 255, "uint16")
    assert "very dark" in logic.value_range_problem("optical", "ibhfn", 10000, "uint8")
    assert logic.value_range_problem("optical", "ibhfn", 10000, "uint16") is None
    assert logic.value_range_problem("sar", "x", 0, "float32") is None
