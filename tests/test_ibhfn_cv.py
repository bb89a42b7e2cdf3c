"""IB-HFN cross-validation driver and its benchmark table (tiny models, a few steps, real triplets)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # the test machine is shared; oversubscribed threads are much slower

from skyclear.models.ibhfn import cv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / ".." / "shared" / "data" / "sen12mscr"
needs_data = pytest.mark.skipif(not (DATA / "oriolac_0581" / "s1.tif").exists(), reason="shared data absent")


def _benchmark():
    spec = importlib.util.spec_from_file_location("quality_sar", REPO / "benchmarks" / "quality_sar_cloud_removal.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_folds_partition_and_mix_cloud_fractions():
    fractions = {f"s{i:02d}": i / 14 for i in range(15)}
    folds = cv.assign_folds(fractions, 5)
    assert len(folds) == 5 and all(len(f) == 3 for f in folds)
    assert sorted(i for f in folds for i in f) == sorted(fractions)
    # snake order: every fold gets one of the clearest five, one middle and one of the cloudiest five
    order = sorted(fractions, key=fractions.get)
    for f in folds:
        ranks = sorted(order.index(i) for i in f)
        assert ranks[0] < 5 and 5 <= ranks[1] < 10 and ranks[2] >= 10
    assert cv.assign_folds(fractions, 5) == folds
    with pytest.raises(SystemExit):
        cv.assign_folds(fractions, 1)


def test_overrides_and_variants():
    base = {"loss": {"gate_target": "reliability", "warmup": 10}, "model": {"width": 16}}
    out = cv.apply_overrides(base, ['loss.gate_target="mask"', "model.width=8", "composite=null"])
    assert out["loss"] == {"gate_target": "mask", "warmup": 10} and out["model"]["width"] == 8
    assert out["composite"] is None and base["loss"]["gate_target"] == "reliability"
    assert cv.parse_variant('g=loss.gate_target="none";extra=null') == ("g", ['loss.gate_target="none"', "extra=null"])
    with pytest.raises(SystemExit):
        cv.parse_variant("novalue")
    with pytest.raises(SystemExit):
        cv.apply_overrides(base, ["model.width=eight"])


def test_run_config_same_steps_disjoint_split():
    plan = {"folds": [["a", "b"], ["c", "d"], ["e"]], "models": {
        "ibhfn": {"kind": "ibhfn", "config": {"steps": 1000, "loss": {"warmup": 500, "delay": 100}}},
        "baseline": {"kind": "dsen2cr", "config": {"steps": 2000, "loss": {"warmup": 500, "delay": 100}}}}}
    a, b = cv.run_config(plan, "ibhfn", 1, 200), cv.run_config(plan, "baseline", 1, 200)
    assert a["steps"] == b["steps"] == 200 and a["train_ids"] == b["train_ids"] == ["a", "b", "e"]
    assert a["test_ids"] == ["c", "d"] and not set(a["train_ids"]) & set(a["test_ids"])
    assert a["loss"]["warmup"] == 100 and b["loss"]["warmup"] == 50   # scaled to the common step count
    assert a["val_ids"] == [] and a["time_budget_min"] == 0 and a["threads"] == 1


def test_bootstrap_ci():
    bench = _benchmark()
    mean, lo, hi = bench.bootstrap_ci([1.0, 1.2, 0.8, 1.1, 0.9])
    assert mean == pytest.approx(1.0) and 0.8 < lo < 1.0 < hi < 1.2
    mean, lo, hi = bench.bootstrap_ci([-2.0, 3.0, -1.0, 2.0])
    assert lo < 0 < hi
    assert np.isnan(bench.bootstrap_ci([])[0])


@needs_data
def test_cv_end_to_end_resumes_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "cv"
    argv = ["--out", str(out), "--folds", "5", "--steps", "3", "--only-folds", "0", "--data", str(DATA),
            "--set", "batch_size=2", "--set", "crop=32", "--set", "extra_p=0", "--set", "real_extra_p=0",
            "--set", 'extra={"clear": [], "cloud_layers": ["sen12mscr_ts"]}',
            "--ibhfn-set", "model.width=4", "--baseline-set", "model.width=4", "--baseline-set", "model.blocks=1",
            "--variant", 'gate-mask=loss.gate_target="mask"']
    assert cv.main(argv) == 0
    plan = json.loads((out / "plan.json").read_text())
    test_ids = plan["folds"][0]
    assert set(plan["models"]) == {"ibhfn", "baseline", "gate-mask"} and plan["steps"] == 3
    for name in ("ibhfn", "baseline", "gate-mask"):
        res = json.loads((out / "fold0" / f"{name}.json").read_text())
        assert res["steps"] == 3 and [r["sample"] for r in res["rows"]] == test_ids
        assert not set(res["train_ids"]) & set(test_ids) and len(res["train_ids"]) == 12
        for r in res["rows"]:
            assert np.isfinite(r["all"]["psnr"]) and "stripe_index" in r and "sar_edge_corr" in r
        assert res["clear_scenes"] and res["clear_scenes"][0]["scene"] == "bigearthnet/57_38"
        run_cfg = json.loads((out / "fold0" / name / "config.json").read_text())
        assert run_cfg["split"]["heldout_never_used"] == test_ids
        assert "bigearthnet/57_38" in run_cfg["extra"]["exclude"]
    mtime = (out / "fold0" / "ibhfn.json").stat().st_mtime
    capsys.readouterr()
    assert cv.main(argv) == 0                        # restart: finished models are skipped
    assert "fold 0 ibhfn: done, skipped" in capsys.readouterr().out
    assert (out / "fold0" / "ibhfn.json").stat().st_mtime == mtime
    report = _benchmark().cv_report(out)
    assert "IB-HFN - baseline" in report and "Do no harm" in report and "Stripe index" in report
    assert "SAR structure under cloud" in report and "gate-mask" in report
    assert "ibhfn 1/5" in report
    for sid in test_ids:
        assert sid.replace("oriolac_", "") in report
