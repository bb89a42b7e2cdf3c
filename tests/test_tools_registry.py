"""The tool registry (plugin/core/tools.py) is the one definition of each tool: the job
functions, the batch manifest and the fixed choices follow it (no QGIS needed)."""
from __future__ import annotations

import inspect

import pytest
import rasterio

from skyclear.plugin.core import choices, jobs, tools
from skyclear.plugin.core.errors import InputError

from factories import random_image, write_raster

RUN_KEYWORDS = {"progress", "is_cancelled"}


def declared(spec: tools.ToolSpec) -> set:
    names = {i.keyword for i in spec.inputs} | {i.bands_keyword for i in spec.inputs if i.bands_param}
    names |= {m.keyword for m in spec.models} | {o.keyword for o in spec.all_options()}
    return names | {o.keyword for o in spec.outputs}


@pytest.mark.parametrize("spec", tools.TOOLS, ids=lambda s: s.name)
def test_each_job_takes_exactly_what_its_spec_declares(spec):
    parameters = inspect.signature(spec.job()).parameters
    assert all(p.kind == p.KEYWORD_ONLY for p in parameters.values())
    assert set(parameters) == declared(spec) | RUN_KEYWORDS
    # option defaults live in the registry only
    assert all(parameters[o.keyword].default is inspect.Parameter.empty for o in spec.all_options())


def test_keys_titles_and_params_are_unique():
    assert len({t.key for t in tools.TOOLS}) == len({t.name for t in tools.TOOLS}) == len(tools.TOOLS)
    assert len({t.title for t in tools.TOOLS}) == len(tools.TOOLS)
    for spec in tools.TOOLS:
        params = ([i.param for i in spec.inputs] + [i.bands_param for i in spec.inputs if i.bands_param]
                  + [m.param for m in spec.models] + [o.param for o in spec.all_options()]
                  + [o.param for o in spec.outputs])
        assert len(params) == len(set(params)), spec.name
        help_text = spec.help_text()
        assert all(f"{p}:" in help_text or f"{p} /" in help_text for p in params), spec.name
        for option in spec.all_options():
            if option.kind == tools.CHOICE:
                assert option.default in option.choices and option.first_choice in option.choices


def test_choices_are_defined_once():
    from skyclear.plugin.core.metrics import fusion
    from skyclear.plugin.core.runtime import DEVICES

    assert fusion.METRIC_NAMES is choices.FUSION_METRICS
    assert DEVICES is choices.DEVICES
    assert tools.tool("fusion").option("method").choices is choices.FUSION_METHODS
    assert tools.tool("optical_cloud_removal").option("mode").choices is choices.OPTICAL_MODES


def test_option_ranges_and_choices_refused_before_any_file_is_read(tmp_path):
    missing = str(tmp_path / "missing.tif")
    with pytest.raises(InputError, match=r"steps must be between 1 and 1000, got 0"):
        jobs.remove_clouds_optical(optical=missing, output=str(tmp_path / "o.tif"), steps=0)
    with pytest.raises(InputError, match="mode must be one of diffusion, reference"):
        jobs.remove_clouds_optical(optical=missing, output=str(tmp_path / "o.tif"), mode="fast")
    with pytest.raises(InputError, match="clear_threshold must be between 0 and 1"):
        jobs.remove_clouds_sar(optical=missing, sar=missing, output=str(tmp_path / "o.tif"), clear_threshold=2)
    with pytest.raises(InputError, match="device must be one of auto, cpu, gpu"):
        jobs.fuse_sar_optical(sar=missing, optical=missing, output=str(tmp_path / "o.tif"), device="tpu")
    # an option the chosen mode does not use is not checked
    with pytest.raises(InputError) as info:
        jobs.remove_clouds_optical(optical=missing, output=str(tmp_path / "o.tif"), mode="reference", steps=0)
    assert "steps" not in str(info.value)


def test_jobs_take_the_registry_defaults(tmp_path):
    optical = write_raster(str(tmp_path / "rgb.tif"), random_image((3, 60, 60), "uint8", seed=1))
    sar = write_raster(str(tmp_path / "sar.tif"), random_image((1, 60, 60), "uint8", seed=2))
    out = str(tmp_path / "fused.tif")
    report = jobs.fuse_sar_optical(sar=sar, optical=optical, output=out, method="average", sar_bands=[1])
    spec = tools.tool("fuse_sar_optical")
    with rasterio.open(out) as ds:
        assert ds.tags()["SKYCLEAR_DESPECKLE"] == str(spec.option("despeckle").default)
        assert ds.compression.value.lower() == spec.option("compression").default
    assert report.outputs == spec.output_files({"output": out}, _card(spec, sar, optical))


def _card(spec, sar, optical):
    from skyclear.plugin.core.model_card import parse_card
    from skyclear.plugin.core.raster_io import describe_raster

    return parse_card(jobs.fusion_card({"method": "average"}, {"sar": describe_raster(sar)["dtype"],
                                                                "optical": describe_raster(optical)["dtype"]}))


def test_the_batch_manifest_follows_the_registry():
    from skyclear.batch.manifest import TOOLS

    assert list(TOOLS) == [t.name for t in tools.TOOLS]
    for spec in tools.TOOLS:
        tool = TOOLS[spec.name]
        assert {p.keyword for p in tool.params.values()} == declared(spec)
        assert set(tool.required) == ({i.param for i in spec.inputs if i.required} | {spec.outputs[0].param}
                                      | {m.param for m in spec.models if m.required})


def test_where_a_model_belongs_and_what_runs_out_of_the_box():
    from skyclear.plugin.core.model_card import parse_card

    from factories import base_card

    generic = parse_card(base_card(["B1"], ["B1"]))
    step = parse_card(base_card(["B1"], ["B1"], task="optical_cloud_removal_diffusion_step"))
    assert tools.card_problem(tools.tool("custom"), generic) is None
    assert "Run custom model" in tools.card_problem(tools.tool("fusion"), generic)
    assert tools.card_problem(tools.tool("optical_cloud_removal"), step, "step_model") is None
    assert "Remove clouds (diffusion)" in tools.card_problem(tools.tool("custom"), step)
    with pytest.raises(Exception, match="is a 'generic' model, not a 'sar_cloud_removal' model"):
        tools.require_card(tools.tool("sar_cloud_removal"), "model", generic, "/x/generic.onnx")
    assert tools.available(tools.tool("fusion")) == (True, "ready")        # classical methods need no model
    assert tools.available(tools.tool("custom")) == (True, "ready")
