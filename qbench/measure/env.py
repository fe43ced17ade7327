"""Environment fingerprint: what the figures were measured on (recorded with every cell)."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import psutil

from qbench import __version__
from qbench.config import paths

# env variables that make a backend's int8 kernels use less than the host's ISA (qbench/quant/int8_path.py)
ISA_OVERRIDES = ("FBGEMM_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
INT8_ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile", "neon", "asimddp")


@lru_cache(maxsize=1)
def _cpu_info() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, frozenset(flags)


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (``/proc/cpuinfo``; empty where unreadable)."""
    return _cpu_info()[1]


def _governor() -> str:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return "unreadable"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


@lru_cache(maxsize=1)
def git_sha() -> str:
    """Commit of the qbench source tree (``+dirty`` when it has uncommitted changes): the checkout's, or for a
    regular install the one its wheel was built from; ``unknown`` when neither is known."""
    if paths.PROJECT_DIR is None or not (paths.PROJECT_DIR / ".git").exists():
        # not a checkout (a wheel in site-packages, maybe inside the user's own repository): never ask git
        return paths.build_info().get("git_sha") or "unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=paths.PROJECT_DIR, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=paths.PROJECT_DIR, capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def fingerprint() -> dict[str, str]:
    """Host facts and library versions, without importing them (the orchestrator records them too); the
    measuring process adds torch's own facts (:func:`qbench.measure.torch_env.torch_facts`)."""
    model, flags = _cpu_info()
    info = {
        "host": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu.model": model,
        "cpu.physical_cores": str(psutil.cpu_count(logical=False) or 0),
        "cpu.logical_cores": str(psutil.cpu_count(logical=True) or 0),
        "cpu.isa": ",".join(f for f in INT8_ISA_FLAGS if f in flags) or "none",
        "cpu.governor": _governor(),
        # kernels told to use less than the host's ISA: their figures are not the host's (qbench/quant/int8_path.py)
        "cpu.isa_override": ",".join(f"{k}={os.environ[k]}" for k in ISA_OVERRIDES if os.environ.get(k)) or "none",
        "affinity_cores": str(len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else "unknown",
        "mem.total_gb": f"{psutil.virtual_memory().total / 2**30:.1f}",
        "qbench": __version__,
        "git_sha": git_sha(),
    }
    for package in ("torch", "torchvision", "onnxruntime", "onnx", "mlflow", "hydra-core"):
        info[f"version.{package}"] = _version(package)
    return info


def host_id(info: dict[str, str]) -> str:
    """Short id of the hardware + software stack: equal ids mean latency figures are comparable."""
    keys = ("cpu.model", "cpu.isa", "cpu.physical_cores", "version.torch", "version.onnxruntime", "cuda")
    blob = "|".join(info.get(k, "") for k in keys)
    override = info.get("cpu.isa_override", "none")
    if override != "none":  # appended only when set: host ids recorded without an override stay what they were
        blob += f"|{override}"
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
