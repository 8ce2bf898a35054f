"""CPU kernels in C++ built at first use with the system compiler, loaded through :mod:`ctypes`.

The sources (``modeling/layers/csrc/*.cpp``) include no torch header: they take raw pointers to contiguous tensors,
so they build in about a second with any C++17 compiler, and link OpenMP from the same runtime torch loaded (the
``libgomp.so.1`` of the torch wheel on Linux), so they use torch's thread count and pool. The built library is kept
in a cache directory under a key made of the source, the compiler and its version, the flags and the CPU
(``-march=native`` code only runs on the CPU it was built for), so a machine builds each kernel once.

Environment:

* ``DETR_NATIVE_KERNELS=0`` turns the native kernels off (the ``"auto"`` backends then use the pure-PyTorch ones).
* ``DETR_KERNEL_CACHE``: where built libraries go (default ``$XDG_CACHE_HOME/detr_kernels`` or
  ``~/.cache/detr_kernels``).
* ``CXX``: the compiler (default: the first of ``c++``, ``g++``, ``clang++`` on the ``PATH``).

When no compiler is found or the build fails, :func:`load_native_library` returns None,
:func:`native_unavailable_reason` says why (the compiler's output included) and a warning is logged once; nothing
else changes.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

__all__ = ["CSRC_DIR", "load_native_library", "native_kernels_enabled", "native_unavailable_reason"]

logger = logging.getLogger(__name__)

#: where the kernel sources live
CSRC_DIR = Path(__file__).resolve().parent / "csrc"

#: flag sets tried in order: the first that builds is kept (no -march=native or no OpenMP on some toolchains)
_FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-fopenmp"),
    ("-O3",),
)
_COMMON_FLAGS = ("-std=c++17", "-shared", "-fPIC")

_lock = threading.Lock()
_libraries: dict[str, ctypes.CDLL | None] = {}
_reasons: dict[str, str] = {}


def native_kernels_enabled() -> bool:
    """False when ``DETR_NATIVE_KERNELS`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get("DETR_NATIVE_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def _cache_dir() -> Path:
    if os.environ.get("DETR_KERNEL_CACHE"):
        return Path(os.environ["DETR_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "detr_kernels"


def _find_compiler() -> str | None:
    if os.environ.get("CXX"):
        return shutil.which(os.environ["CXX"])
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the CPU model and its instruction-set flags."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(dict.fromkeys(lines))
    except OSError:
        return platform.processor() or platform.machine()


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        return repr(error)


def _build(name: str, source: Path, compiler: str, target_dir: Path) -> tuple[Path | None, str]:
    """Builds ``source`` with the first flag set that works; returns (library path, "") or (None, why)."""
    identity = [source.read_bytes(), compiler.encode(), _compiler_version(compiler).encode(), _cpu_identity().encode()]
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(b"\0".join([*identity, " ".join(flags + _COMMON_FLAGS).encode()])).hexdigest()[:16]
        path = target_dir / f"{name}-{key}.so"
        if path.exists():
            return path, ""
        try:
            target_dir.mkdir(parents=True, exist_ok=True)
            # build under a temporary name, then rename: processes building at the same time never see half a file
            fd, tmp = tempfile.mkstemp(suffix=".so", prefix=f".{name}-", dir=target_dir)
            os.close(fd)
        except OSError as error:
            return None, f"the kernel cache {target_dir} is not writable ({error}); set DETR_KERNEL_CACHE"
        command = [compiler, *flags, *_COMMON_FLAGS, str(source), "-o", tmp]
        start = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as error:
            result = subprocess.CompletedProcess(command, 1, "", repr(error))
        if result.returncode == 0:
            os.replace(tmp, path)
            logger.info(f"built the native kernel '{name}' in {time.perf_counter() - start:.1f} s: {path}")
            return path, ""
        os.unlink(tmp)
        errors.append(f"$ {' '.join(command)}\n{(result.stderr or result.stdout).strip()[-2000:]}")
    return None, "the build failed:\n" + "\n".join(errors)


def load_native_library(name: str, abi_version: int) -> ctypes.CDLL | None:
    """The library built from ``csrc/{name}.cpp`` (built and cached on first use), or None when it cannot be
    had; the reason is then :func:`native_unavailable_reason`. The library must export ``{name}_abi_version()``
    returning ``abi_version``; one that returns another version is refused (the Python wrapper and the source
    disagree)."""
    with _lock:
        if name in _libraries:
            return _libraries[name]
        library, reason = None, ""
        if not native_kernels_enabled():
            reason = "DETR_NATIVE_KERNELS turns them off"
        elif (compiler := _find_compiler()) is None:
            reason = "no C++ compiler found (set CXX, or install g++ or clang++)"
        else:
            import torch  # noqa: F401  (loads torch's OpenMP runtime first, so the kernel links that one)

            path, reason = _build(name, CSRC_DIR / f"{name}.cpp", compiler, _cache_dir())
            if path is not None:
                try:
                    library = ctypes.CDLL(str(path))
                    found = getattr(library, f"{name}_abi_version")()
                    if found != abi_version:
                        library, reason = None, f"{path} has ABI version {found}, expected {abi_version}"
                except (OSError, AttributeError) as error:
                    library, reason = None, f"{path} cannot be loaded: {error}"
        _libraries[name] = library
        if library is None:
            _reasons[name] = reason
            logger.warning(f"native CPU kernel '{name}' unavailable ({reason}); using the pure-PyTorch kernels")
        return library


def native_unavailable_reason(name: str) -> str | None:
    """Why :func:`load_native_library` returned None for ``name`` (None if it was not tried or succeeded)."""
    return _reasons.get(name)


def _forget(name: str) -> None:
    """Drops what is known about ``name`` (tests: the next load tries again)."""
    with _lock:
        _libraries.pop(name, None)
        _reasons.pop(name, None)
