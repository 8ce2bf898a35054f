"""Building, caching and falling back from the C++ CPU kernels (``modeling/layers/native_kernels.py``)."""

import logging
import re
import shutil

import pytest
import torch

from modeling.layers import SAMPLING_BACKENDS, native_kernels
from modeling.layers import ms_deform_attn as msda
from tests.modeling.native import require_native_sampling


@pytest.fixture
def fresh_kernel(monkeypatch, tmp_path):
    """The sampling kernel forgotten and built into an empty cache directory; restored afterwards."""
    monkeypatch.setenv("DETR_KERNEL_CACHE", str(tmp_path / "cache"))
    native_kernels._forget(msda.NATIVE_KERNEL)
    yield tmp_path / "cache"
    native_kernels._forget(msda.NATIVE_KERNEL)


def _inputs():
    generator = torch.Generator().manual_seed(0)
    shapes = [(5, 6), (3, 3)]
    value = torch.randn(2, 39, 2, 16, generator=generator)
    locations = torch.rand(2, 4, 2, 2, 2, 2, generator=generator)
    weights = torch.rand(2, 4, 2, 2, 2, generator=generator)
    return value, shapes, locations, weights


def test_kernel_is_built_once_then_read_from_the_cache(fresh_kernel, monkeypatch, caplog):
    require_native_sampling(build=False)
    with caplog.at_level(logging.INFO, logger=native_kernels.__name__):
        assert msda.native_sampling_available()
    built = list(fresh_kernel.glob("ms_deform_attn_cpu-*.so"))
    assert len(built) == 1 and "built the native kernel" in caplog.text
    stamp = built[0].stat().st_mtime_ns

    def no_compiler_run(command, *args, **kwargs):
        if "-o" in command:
            raise AssertionError(f"rebuilt although cached: {command}")
        return original_run(command, *args, **kwargs)

    original_run = native_kernels.subprocess.run
    monkeypatch.setattr(native_kernels.subprocess, "run", no_compiler_run)
    native_kernels._forget(msda.NATIVE_KERNEL)  # a new process: loads the cached library
    value, shapes, locations, weights = _inputs()
    expected = SAMPLING_BACKENDS["pytorch"](value, shapes, None, locations, weights)
    torch.testing.assert_close(SAMPLING_BACKENDS["native"](value, shapes, None, locations, weights), expected)
    assert built[0].stat().st_mtime_ns == stamp and not list(fresh_kernel.glob(".*"))  # no temporary left


@pytest.mark.parametrize("cause", ["disabled", "no compiler", "build error", "unwritable cache"])
def test_without_the_kernel_auto_falls_back_and_native_says_why(fresh_kernel, monkeypatch, tmp_path, caplog, cause):
    if cause == "unwritable cache":
        if native_kernels._find_compiler() is None:
            pytest.skip("no C++ compiler: the cache is never written")
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        monkeypatch.setenv("DETR_KERNEL_CACHE", str(blocker / "cache"))
        expected_reason = "the kernel cache"
    elif cause == "disabled":
        monkeypatch.setenv("DETR_NATIVE_KERNELS", "0")
        expected_reason = "DETR_NATIVE_KERNELS"
    elif cause == "no compiler":
        monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
        expected_reason = "no C++ compiler"
    else:
        if native_kernels._find_compiler() is None:
            pytest.skip("no C++ compiler to fail with")
        broken = tmp_path / "csrc"
        broken.mkdir()
        (broken / f"{msda.NATIVE_KERNEL}.cpp").write_text("this is not C++;\n")
        monkeypatch.setattr(native_kernels, "CSRC_DIR", broken)
        expected_reason = "the build failed"
    value, shapes, locations, weights = _inputs()
    with caplog.at_level(logging.WARNING, logger=native_kernels.__name__):
        actual = SAMPLING_BACKENDS["auto"](value, shapes, None, locations, weights)
    assert expected_reason in caplog.text and "using the pure-PyTorch kernels" in caplog.text
    torch.testing.assert_close(actual, SAMPLING_BACKENDS["gather"](value, shapes, None, locations, weights))
    message = f"(?s)'native' .*unavailable: {re.escape(expected_reason)}.*Select backend 'auto'"
    with pytest.raises(RuntimeError, match=message):
        SAMPLING_BACKENDS["native"](value, shapes, None, locations, weights)
    if cause == "unwritable cache":
        assert "is not writable" in native_kernels.native_unavailable_reason(msda.NATIVE_KERNEL)
    if cause == "build error":
        assert "this is not C++" in native_kernels.native_unavailable_reason(msda.NATIVE_KERNEL)
        assert not fresh_kernel.exists() or not list(fresh_kernel.iterdir())  # no temporary left


def test_native_backend_refuses_tensors_off_the_cpu():
    value, shapes, locations, weights = _inputs()
    with pytest.raises(ValueError, match="runs on the CPU, got tensors on meta"):
        SAMPLING_BACKENDS["native"](value.to("meta"), shapes, None, locations.to("meta"), weights.to("meta"))


def test_cache_key_follows_the_source_and_the_cpu(fresh_kernel, monkeypatch, tmp_path):
    """Another source text or another CPU gets its own library (a -march=native build runs only where it was
    built)."""
    require_native_sampling()
    source_dir = tmp_path / "csrc"
    shutil.copytree(native_kernels.CSRC_DIR, source_dir)
    monkeypatch.setattr(native_kernels, "CSRC_DIR", source_dir)
    assert msda.native_sampling_available()
    native_kernels._forget(msda.NATIVE_KERNEL)
    monkeypatch.setattr(native_kernels, "_cpu_identity", lambda: "another cpu")
    assert msda.native_sampling_available()
    native_kernels._forget(msda.NATIVE_KERNEL)
    with open(source_dir / f"{msda.NATIVE_KERNEL}.cpp", "a") as f:
        f.write("\n// edited\n")
    assert msda.native_sampling_available()
    assert len(list(fresh_kernel.glob("ms_deform_attn_cpu-*.so"))) == 3


def test_a_library_of_another_abi_version_is_refused(fresh_kernel):
    """The wrapper states the ABI version it was written for; a build that reports another one is not called."""
    require_native_sampling(build=False)
    assert native_kernels.load_native_library(msda.NATIVE_KERNEL, abi_version=-1) is None
    assert "has ABI version" in native_kernels.native_unavailable_reason(msda.NATIVE_KERNEL)
    native_kernels._forget(msda.NATIVE_KERNEL)
    assert msda.native_sampling_available()  # the same cached build, with the version the wrapper expects
