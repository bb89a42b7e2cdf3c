"""skyclear.batch on a real 2-process Dask LocalCluster, over the shared data.

A mixed manifest covers every tool (and two split scenes); each output is compared with
the same job run in this process through ``jobs`` (pixels byte for byte, profile, masks,
tags). Then resume, a failing row, manifest validation, a worker killed mid-job, pairing
and the command line.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

pytest.importorskip("distributed")

from skyclear.batch import ManifestError, pair_scenes, plan_jobs, read_manifest, run_batch, write_manifest  # noqa: E402
from skyclear.batch.manifest import TOOLS  # noqa: E402
from skyclear.plugin.core import jobs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "models" / "zoo"
VOLATILE_TAGS = ("SKYCLEAR_SECONDS", "SKYCLEAR_BATCH_KEY", "SKYCLEAR_BATCH_JOB")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=40, env={"SKYCLEAR_THREADS": "1"})
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


def mixed_rows(data: Path, out: Path):
    """Eight jobs over all four tools; two are split into row bands."""
    cloudy = data / "sen12mscr_s1_cloudy" / "ROIs1868_summer_19_p30"
    oriolac = data / "sen12mscr" / "oriolac_0581"
    s1s2 = data / "sen12ms_s1s2" / "ROIs1158_spring_101_p30"
    return [
        {"tool": "remove_clouds_sar", "JOB": "sar_ibhfn", "OPTICAL": cloudy / "s2_cloudy.tif",
         "SAR": cloudy / "s1.tif", "OUTPUT": out / "sar_ibhfn.tif"},
        {"tool": "remove_clouds_sar", "JOB": "sar_dsen2cr_keep", "OPTICAL": oriolac / "s2_cloudy.tif",
         "SAR": oriolac / "s1.tif", "MODEL": ZOO / "dsen2cr_small.onnx", "KEEP_CLEAR": "true",
         "CLEAR_THRESHOLD": 0.4, "OUTPUT": out / "sar_dsen2cr.tif", "CLOUD_PROBABILITY": out / "cp_dsen2cr.tif"},
        {"tool": "remove_clouds_optical", "JOB": "optical_diffusion", "INPUT": data / "rice1" / "105_cloudy.png",
         "STEPS": 2, "SEED": 3, "OUTPUT": out / "optical_diffusion.tif"},
        {"tool": "remove_clouds_optical", "JOB": "optical_reference_split", "MODE": "reference",
         "INPUT": data / "sar_optical" / "cfog_stest3_optical.tif", "TILE_SIZE": 128, "OVERLAP": 48, "SPLIT": 3,
         "OUTPUT": out / "optical_reference_split.tif"},
        {"tool": "remove_clouds_optical", "JOB": "nodata_collar_split", "MODE": "1",  # Processing's enum index
         "INPUT": data / "scenes" / "rasterio_RGB.byte.tif", "TILE_SIZE": 128, "SPLIT": "auto",
         "OUTPUT": out / "nodata_collar_split.tif"},
        {"tool": "fuse_sar_optical", "JOB": "fuse_network", "SAR": data / "sar_optical" / "cfog_stest3_sar.tif",
         "OPTICAL": data / "sar_optical" / "cfog_stest3_optical.tif", "OUTPUT": out / "fuse_network.tif",
         "EXTENT": "284999.625,285839.625,5304069.375,5304909.375 [EPSG:32633]"},  # 240 x 240 px
        {"tool": "fuse_sar_optical", "JOB": "fuse_laplacian_split", "METHOD": "laplacian", "SPLIT": 2,
         "SAR": data / "sar_optical_vsff" / "whuoptsar_sar.tif",
         "OPTICAL": data / "sar_optical_vsff" / "whuoptsar_optical.tif", "OUTPUT": out / "fuse_laplacian.tif"},
        {"tool": "run_model", "JOB": "custom_ibhfn", "MODEL": ZOO / "ibhfn_small.onnx",
         "OPTICAL": s1s2 / "s2_cloudfree.tif", "SAR": s1s2 / "s1.tif", "OUTPUT": out / "custom_ibhfn.tif"},
    ]


def reference_run(job, out: Path):
    """The same job in this process, straight through jobs.*: the single-process result."""
    kwargs = dict(job.kwargs)
    kwargs["output"] = str(out / os.path.basename(kwargs["output"]))
    if kwargs.get("cloud_probability"):
        kwargs["cloud_probability"] = str(out / os.path.basename(kwargs["cloud_probability"]))
    return getattr(jobs, job.tool)(**kwargs).outputs


def assert_same_raster(got: str, want: str):
    with rasterio.open(got) as a, rasterio.open(want) as b:
        pa, pb = dict(a.profile), dict(b.profile)
        na, nb = pa.pop("nodata"), pb.pop("nodata")
        assert pa == pb, got
        assert (na is None and nb is None) or na == nb or (np.isnan(na) and np.isnan(nb)), (got, na, nb)
        assert a.descriptions == b.descriptions
        assert a.mask_flag_enums == b.mask_flag_enums
        ta = {k: v for k, v in a.tags().items() if k not in VOLATILE_TAGS}
        tb = {k: v for k, v in b.tags().items() if k not in VOLATILE_TAGS}
        assert ta == tb
        assert a.read().tobytes() == b.read().tobytes(), f"{got}: pixel values differ from the single-process run"
        assert np.array_equal(a.read_masks(), b.read_masks())


def leftovers(folder: Path):
    return sorted(p.name for p in folder.rglob("*skyclear-*"))


@pytest.mark.parametrize("tile,overlap,parts,out_dtype", [
    (64, 16, 3, "uint8"),     # 5 tile columns, batches of 4: bands start mid-batch
    (64, 40, 4, "float32"),   # overlap > stride: two warm-up rows per band
    (48, 0, 2, "uint8"),      # no overlap at all
])
def test_row_bands_stack_to_the_whole_scene(tmp_path, tile, overlap, parts, out_dtype):
    """The engine's tile_rows + the assembler, on a synthetic scene with a nodata collar (wide enough
    at the top for whole tiles of nodata, which skip the model)."""
    from factories import conv_model, random_image, write_raster
    from skyclear.batch.plan import split_bands
    from skyclear.batch.tasks import engine_env, stack_parts
    from skyclear.plugin.core.engine import run_options
    from skyclear.plugin.core.tiling import TileGrid

    image = random_image((3, 300, 250), seed=1)
    image[:, :70, :] = 0
    image[:, :, -30:] = 0
    scene = write_raster(str(tmp_path / "scene.tif"), image, nodata=0)
    model = conv_model(str(tmp_path / "m.onnx"), 3, 3, clip=(0, 255), scale=255.0, out_dtype=out_dtype,
                       tile=tile, overlap=overlap)
    whole = jobs.run_model(model=model, optical=scene, output=str(tmp_path / "whole.tif")).outputs["restored"]
    bands = split_bands(TileGrid(300, 250, tile, overlap), parts)
    assert len(bands) == parts
    files = []
    for k, rows in enumerate(bands):
        with run_options(tile_rows=rows):
            files.append(jobs.run_model(model=model, optical=scene, output=str(tmp_path / f"p{k}.tif"))
                         .outputs["restored"])
    with engine_env(1):
        stacked = stack_parts({"restored": files}, {"restored": str(tmp_path / "stacked.tif")}, 1.0)
    assert_same_raster(stacked["restored"], whole)


@pytest.fixture(scope="module")
def mixed_run(client, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch_out")
    manifest = write_manifest([{k: str(v) for k, v in r.items()} for r in mixed_rows(data_dir, out)],
                              str(out / "jobs.csv"))
    summary = run_batch(manifest, client=client, report=str(out / "report.json"), progress=False)
    return manifest, out, summary


def test_mixed_manifest_runs_every_tool_on_two_workers(mixed_run):
    manifest, out, summary = mixed_run
    assert {r["tool"] for r in summary.results} == set(TOOLS)
    assert [r["status"] for r in summary.results] == ["done"] * 8, [r["error"] for r in summary.results]
    assert summary.workers == 2
    assert len({w for r in summary.results for w in r["worker"].split(",")}) == 2, "both workers ran jobs"
    report = json.loads((out / "report.json").read_text())
    assert [r["job"] for r in report] == [r["job"] for r in summary.results]
    assert all(r["provider"] in ("CPUExecutionProvider", "numpy") and r["seconds"] > 0 for r in report)
    assert len(summary.by_job()["custom_ibhfn"]["outputs"]) == 2  # restored + clear_probability
    with rasterio.open(out / "sar_ibhfn.tif") as ds:
        assert ds.tags()["SKYCLEAR_BATCH_KEY"] and ds.crs is not None
    assert leftovers(out) == []


def test_batch_outputs_are_identical_to_single_process_runs(mixed_run, tmp_path):
    manifest, out, summary = mixed_run
    by_name = summary.by_job()
    for job in [plan.job for plan in plan_jobs(read_manifest(manifest))]:  # EXTENT in the optical CRS
        reference = reference_run(job, tmp_path)
        batch = by_name[job.name]["outputs"]
        assert set(reference) == set(batch)
        for name in reference:
            assert_same_raster(batch[name], reference[name])


def test_split_jobs_really_ran_as_bands(mixed_run, tmp_path):
    by_job = mixed_run[2].by_job()
    assert by_job["optical_reference_split"]["parts"] == 3
    assert by_job["nodata_collar_split"]["parts"] == 2      # auto: one band per worker
    assert by_job["fuse_laplacian_split"]["parts"] == 2
    # Dask places bands where there is room; over the three split jobs both workers took part
    workers = {w for j in ("optical_reference_split", "nodata_collar_split", "fuse_laplacian_split")
               for w in by_job[j]["worker"].split(",")}
    assert len(workers) == 2
    with rasterio.open(by_job["fuse_network"]["outputs"]["fused"]) as ds:
        assert ds.shape == (240, 240)                       # EXTENT crops, in the given CRS


def test_resume_skips_finished_jobs_and_reruns_changed_ones(mixed_run, client):
    manifest, out, _ = mixed_run
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    again = run_batch(manifest, client=client, progress=False)
    assert [r["status"] for r in again.results] == ["skipped"] * 8
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")} == before

    rows = list(csv.DictReader(open(manifest)))
    rows[2]["SEED"] = "4"                       # an option changed
    os.remove(out / "fuse_network.tif")         # an output lost
    changed = write_manifest(rows, str(out / "jobs_changed.csv"))
    third = run_batch(changed, client=client, progress=False)
    status = {r["job"]: r["status"] for r in third.results}
    assert status.pop("optical_diffusion") == "done" and status.pop("fuse_network") == "done"
    assert set(status.values()) == {"skipped"}
    # nothing ran twice on a worker: the second batch reused the sessions the first loaded
    assert all(r.get("models_loaded", 0) <= 1 for r in third.results)


def test_each_worker_loads_each_model_once(client, data_dir, tmp_path):
    cloudy = data_dir / "sen12mscr_s1_cloudy" / "ROIs1868_summer_19_p30"
    rows = [{"tool": "remove_clouds_sar", "OPTICAL": cloudy / "s2_cloudy.tif", "SAR": cloudy / "s1.tif",
             "MODEL": ZOO / "dsen2cr_small.onnx", "CLEAR_THRESHOLD": 0.1 * i, "OUTPUT": tmp_path / f"o{i}.tif"}
            for i in range(6)]
    summary = run_batch(rows, client=client, progress=False)
    assert all(r["status"] == "done" for r in summary.results)
    loads = {}
    for r in summary.results:
        loads[r["worker"]] = loads.get(r["worker"], 0) + r["models_loaded"]
    assert all(n <= 1 for n in loads.values()), loads


def test_a_bad_row_fails_alone_with_its_message(client, data_dir, tmp_path):
    cloudy = data_dir / "sen12mscr_s1_cloudy" / "ROIs1868_summer_19_p30"
    rows = [
        {"tool": "fuse_sar_optical", "METHOD": "average", "SAR": data_dir / "sar_optical" / "cfog_stest3_sar.tif",
         "OPTICAL": data_dir / "sar_optical" / "cfog_stest3_optical.tif", "OUTPUT": tmp_path / "good1.tif"},
        # valid on paper, but this SAR patch lies in China and the optical one in France
        {"tool": "remove_clouds_sar", "JOB": "wrong_place", "OPTICAL": cloudy / "s2_cloudy.tif",
         "SAR": data_dir / "s1_samples" / "ROIs1158_spring_s1_100_p102.tif", "OUTPUT": tmp_path / "bad.tif"},
        {"tool": "remove_clouds_optical", "MODE": "reference", "INPUT": data_dir / "rice2" / "100_cloudy.png",
         "OUTPUT": tmp_path / "good2.tif"},
    ]
    summary = run_batch(rows, client=client, progress=False, report=str(tmp_path / "report.csv"))
    status = {r["job"]: r for r in summary.results}
    assert status["good1"]["status"] == "done" and status["good2"]["status"] == "done"
    assert status["wrong_place"]["status"] == "failed"
    assert "does not overlap" in status["wrong_place"]["error"]
    assert not summary.ok
    assert not (tmp_path / "bad.tif").exists() and not (tmp_path / "bad_cloud_probability.tif").exists()
    assert leftovers(tmp_path) == []
    report = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert [r["status"] for r in report] == ["done", "failed", "done"]
    assert "does not overlap" in report[1]["error"]


def test_whole_manifest_is_validated_before_anything_runs(data_dir, tmp_path):
    optical = data_dir / "sar_optical" / "cfog_stest3_optical.tif"
    sar = data_dir / "sar_optical" / "cfog_stest3_sar.tif"
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"tool": "fuse_sar_optical", "inputs": {"SAR": str(sar), "OPTICAL": str(optical)},
         "OUTPUT": "fine.tif", "options": {"METHOD": "average"}},
        {"tool": "fuse_sar_optical", "SAR": "missing_sar.tif", "OPTICAL": str(optical), "OUTPUT": "a.tif"},
        {"tool": "remove_clouds_optical", "INPUT": str(optical), "OUTPUT": "dup.tif", "STEPS": "many"},
        {"tool": "remove_clouds_optical", "INPUT": str(optical), "OUTPUT": "dup.tif", "COLOUR": "red"},
        {"tool": "remove_clouds_optical", "INPUT": str(optical), "OUTPUT": "deep.tif", "STEPS": 1000},
        {"tool": "remove_clouds_optical", "INPUT": str(optical), "OUTPUT": "ref.tif", "STEPS": 1000,
         "MODE": "reference", "STEP_MODEL": str(ZOO / "de_step_rice.onnx")},   # STEPS unused: no problem
        {"tool": "fuse_sar_optical", "SAR": str(sar), "OPTICAL": str(optical), "OUTPUT": str(sar)},
        {"tool": "remove_clouds_sar", "OPTICAL": str(optical), "SAR": str(sar), "OUTPUT": "x.tif",
         "MODEL": str(ZOO / "fusion_hier_small.onnx")},
        {"tool": "sharpen", "OUTPUT": "y.tif"},
    ]) + "\n")
    with pytest.raises(ManifestError) as info:
        run_batch(str(tmp_path / "jobs.jsonl"), workers=0, progress=False)
    text = str(info.value)
    assert "nothing was run" in text
    for expected in ("row 1 (fine): SAR", "is the output 'fused' of row 7", "row 2 (a): SAR: file not found", "STEPS: expected a whole number", "also written by",
                     "has no parameter(s) COLOUR", "would be overwritten",
                     "row 5 (deep): STEPS: steps must be between 1 and 301 for this step model (it samples from t = 300",
                     "is a 'sar_optical_fusion' model, not a 'sar_cloud_removal' model", "unknown tool 'sharpen'"):
        assert expected in text, expected
    assert "(ref)" not in text
    assert not list(tmp_path.glob("*.tif"))


def test_killed_worker_job_is_retried_elsewhere_without_partial_files(client, data_dir, tmp_path):
    slow = {"tool": "remove_clouds_optical", "JOB": "slow", "INPUT": data_dir / "thin_cloud" / "pna_1_cloudy.tif",
            "STEPS": 3, "OUTPUT": tmp_path / "slow.tif"}
    quick = [{"tool": "fuse_sar_optical", "METHOD": m, "SAR": data_dir / "sar_optical" / "cfog_stest3_sar.tif",
              "OPTICAL": data_dir / "sar_optical" / "cfog_stest3_optical.tif", "OUTPUT": tmp_path / f"{m}.tif"}
             for m in ("average", "laplacian", "optical")]
    pids_before = set(client.run(os.getpid).values())
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(s=run_batch([slow] + quick, client=client,
                                                                          progress=False)))
    runner.start()
    killed = None
    deadline = time.time() + 60
    while killed is None and time.time() < deadline:
        if list(tmp_path.glob(".slow.tif.skyclear-*")):      # the slow job is writing its output
            for address, keys in client.processing().items():
                if any("-assemble" not in k and k.startswith("skyclear-1-") for k in keys):
                    killed = client.run(os.getpid, workers=[address])[address]
                    os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    runner.join(180)
    assert killed is not None, "the slow job was never seen running"
    summary = outcome["s"]
    assert [r["status"] for r in summary.results] == ["done"] * 4, [r["error"] for r in summary.results]
    assert not summary.by_job()["slow"]["worker"].endswith(f":{killed}")
    assert killed in pids_before
    assert leftovers(tmp_path) == [], "a temporary file of the killed worker was left behind"
    with rasterio.open(tmp_path / "slow.tif") as ds:
        assert ds.read().any()


def test_existing_scheduler_by_address(client, data_dir, tmp_path):
    """--scheduler tcp://host:port: connect, run, disconnect; the cluster stays up."""
    rows = [{"tool": "remove_clouds_optical", "MODE": "reference", "INPUT": data_dir / "rice1" / "105_cloudy.png",
             "OUTPUT": tmp_path / "o.tif"}]
    summary = run_batch(rows, scheduler=client.scheduler.address, progress=False)
    assert summary.results[0]["status"] == "done" and summary.workers == 2
    assert len(client.scheduler_info()["workers"]) == 2


def test_pairing_matches_tile_and_nearest_date(tmp_path):
    for name in ("S2A_MSIL2A_20200223T035541_N0214_R004_T48QWD_20200223T073012.tif",
                 "S2B_MSIL2A_20200305T035541_N0214_R004_T48QWD_20200305T073012.tif",
                 "S2B_MSIL2A_20200305T035541_N0214_R004_T31UDQ_20200305T073012.tif"):
        (tmp_path / "s2").mkdir(exist_ok=True)
        (tmp_path / "s2" / name).write_bytes(b"")
    for name in ("S1A_IW_GRDH_20200221_T48QWD_db.tif", "S1A_IW_GRDH_20200224_T48QWD_db.tif",
                 "S1B_IW_GRDH_20200301_T48QWD_db.tif", "S1B_IW_GRDH_20200305_T32UDQ_db.tif"):
        (tmp_path / "s1").mkdir(exist_ok=True)
        (tmp_path / "s1" / name).write_bytes(b"")
    rows, unmatched = pair_scenes(str(tmp_path / "s2" / "*.tif"), str(tmp_path / "s1" / "*.tif"),
                                  tool="remove_clouds_sar", out_dir=str(tmp_path / "out"), max_days=5,
                                  options={"KEEP_CLEAR": "true"})
    pairs = {Path(r["OPTICAL"]).name[11:19]: Path(r["SAR"]).name[12:20] for r in rows}
    assert pairs == {"20200223": "20200224", "20200305": "20200301"}
    assert [Path(p).name for p in unmatched] == ["S2B_MSIL2A_20200305T035541_N0214_R004_T31UDQ_20200305T073012.tif"]
    assert rows[0]["OUTPUT"].endswith("_cloudfree_sar.tif") and rows[0]["KEEP_CLEAR"] == "true"   # the dialog's name


def test_command_line_checks_and_runs_in_process(data_dir, tmp_path):
    manifest = write_manifest([{"tool": "fuse_sar_optical", "METHOD": "average", "JOB": "cli",
                                "SAR": str(data_dir / "sar_optical" / "cfog_stest3_sar.tif"),
                                "OPTICAL": str(data_dir / "sar_optical" / "cfog_stest3_optical.tif"),
                                "OUTPUT": "cli.tif"}], str(tmp_path / "m.csv"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    check = subprocess.run([sys.executable, "-m", "skyclear.batch", manifest, "--check"], capture_output=True,
                           text=True, env=env, timeout=120)
    assert check.returncode == 0 and "would run" in check.stdout, check.stderr
    assert not (tmp_path / "cli.tif").exists()
    run = subprocess.run([sys.executable, "-m", "skyclear.batch", manifest, "--workers", "0"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "cli.tif").exists() and (tmp_path / "m_report.csv").exists()
    bad = write_manifest([{"tool": "fuse_sar_optical", "SAR": "nope.tif", "OPTICAL": "nope2.tif",
                           "OUTPUT": "o.tif"}], str(tmp_path / "bad.csv"))
    fail = subprocess.run([sys.executable, "-m", "skyclear.batch", bad], capture_output=True, text=True, env=env,
                          timeout=120)
    assert fail.returncode == 2 and "file not found" in fail.stderr


def test_minus_one_means_the_step_models_value(tmp_path):
    from skyclear.batch.manifest import parse_row

    base = {"TOOL": "remove_clouds_optical", "INPUT": "in.tif", "OUTPUT": "out.tif"}
    job = parse_row(1, {**base, "STEPS": "-1", "ETA": "-1"}, str(tmp_path))
    assert not job.problems and job.kwargs["steps"] is None and job.kwargs["eta"] is None
    job = parse_row(2, {**base, "STEPS": "5", "ETA": "0.45"}, str(tmp_path))
    assert not job.problems and job.kwargs["steps"] == 5 and job.kwargs["eta"] == 0.45
    job = parse_row(3, {**base, "ETA": "1.5"}, str(tmp_path))
    assert any("ETA" in p and "between 0 and 1" in p for p in job.problems), job.problems
