"""scripts/benchmark_speed.py at tiny sizes on the CPU: the kernels mode, the Triton variant (under Triton's
interpreter) and the JSON; the variants agree with the reference within the parity tolerances."""

import json

import pytest

from scripts import benchmark_speed
from tests.modeling.native import require_native_sampling
from tests.modeling.triton import require_triton_on_cpu


def test_r50_level_shapes_follow_the_padded_image():
    # 800x1333 is padded to 800x1344: 100x168 at stride 8, then halved rounding up
    assert benchmark_speed.r50_level_shapes(800, 1333) == [(100, 168), (50, 84), (25, 42), (13, 21)]
    assert benchmark_speed.r50_level_shapes(33, 64) == [(8, 8), (4, 4), (2, 2), (1, 1)]


def test_default_variants_depend_on_the_device():
    args = benchmark_speed.parse_args([])
    assert args.device.type == "cpu" and "triton" not in args.variants and "fast+amp" in args.variants
    assert "native" in args.kernel_backends and "triton" not in args.kernel_backends
    assert "triton" in benchmark_speed.DEFAULT_VARIANTS["cuda"]
    assert "triton" in benchmark_speed.KERNEL_BACKENDS["cuda"]


def _run(argv, tmp_path, capsys):
    path = tmp_path / "speed.json"
    assert benchmark_speed.main([*argv, "--reps", "1", "--threads", "1", "--json", str(path)]) == 0
    with open(path) as handle:
        report = json.load(handle)
    assert report["device"] == "cpu"
    return report["results"], capsys.readouterr().out


@pytest.mark.parametrize(
    "backends",
    # interpreted, the Triton kernels take most of a minute here: that case is marked slow
    [("pytorch", "gather", "native"), pytest.param(("pytorch", "triton"), marks=pytest.mark.slow)],
    ids=["cpu-kernels", "triton"],
)
def test_kernels_mode_times_every_backend_and_checks_it_against_the_reference(tmp_path, capsys, backends):
    if "triton" in backends:
        require_triton_on_cpu()
    if "native" in backends:
        require_native_sampling()
    argv = ["--modes", "kernels", "--size", "32", "48", "--kernel-queries", "7", "--kernel-batch", "1"]
    results, text = _run([*argv, "--kernel-backends", *backends], tmp_path, capsys)
    places, modes, precisions = ("encoder", "decoder"), ("forward", "forward+backward"), ("fp32", "amp")
    assert set(results) == {f"kernels/{p} {m} {x}" for p in places for m in modes for x in precisions}
    for key, result in results.items():
        assert set(result["times"]) == set(backends)
        assert result["agreement"]["pytorch"]["max_abs_diff"] == 0
        tolerance = 1e-5 if key.endswith("fp32") else 0.1  # amp: a bf16 value (and, for "gather", bf16 products)
        assert all(a["max_abs_diff"] <= tolerance for a in result["agreement"].values()), key
    # 32x48 is padded to 32x64: 4x8 at stride 8, then halved rounding up
    assert "deformable sampling alone: levels [(4, 8), (2, 4), (1, 2), (1, 1)], batch 1" in text
    assert "encoder forward+backward fp32" in text and "x pytorch" in text


@pytest.mark.slow  # the interpreted Triton kernels take about a minute in a whole R50 model here
def test_inference_with_the_triton_variant_agrees_with_the_reference(tmp_path, capsys):
    require_triton_on_cpu()
    argv = ["--models", "salience", "--modes", "inference", "--variants", "reference", "fast", "triton"]
    results, text = _run([*argv, "--size", "32", "48", "model.transformer.num_queries=20"], tmp_path, capsys)
    inference = results["salience/inference"]
    assert set(inference["times"]) == {"reference", "fast", "triton"}
    for variant in ("fast", "triton"):  # fp32: the parity tolerances
        assert inference["agreement"][variant]["top100_score_max_diff"] <= 1e-4
        assert inference["agreement"][variant]["top100_box_max_diff_px"] <= 1e-3
    assert "salience inference batch 1 32x48" in text and "x reference" in text


@pytest.mark.parametrize("override", ["model.transformer.no_such_key=1"])
def test_a_mistyped_override_is_an_error(override):
    with pytest.raises(KeyError, match="no_such_key"):
        benchmark_speed.main(["--models", "salience", "--modes", "inference", "--size", "32", "32", override])
