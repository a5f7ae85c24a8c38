"""Which build of llama.cpp this CPU can run: the one place that decides it.

scripts/install.sh runs this file with the system Python before the virtual environment exists
(`python3 qwen_lsp/engine/cpu.py` prints the variant's name, then its CMake options), so it imports
only the standard library. The install records the name in the environment; the engine checks it
against the CPU before loading llama.cpp, so a build copied to (or forced on) a CPU without its
instructions fails with a message instead of an illegal instruction.

Variant names are dash-joined tokens, each standing for the CPU flags it needs (`TOKEN_FLAGS`); the
x86 names are the wheel cache folder names used before this module existed, so caches stay valid.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FORCE_ENV = "QWEN_LSP_CPU_VARIANT"  # build another variant than this CPU's (tests, packaging)
MARKER_NAME = "qwen-lsp-build-variant"  # written into the virtual environment by install.sh

X86_ARCHES = {"x86_64", "amd64"}
ARM64_ARCHES = {"aarch64", "arm64"}
AVX2_FLAGS = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"})
AVX512_FLAGS = AVX2_FLAGS | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"}
TOKEN_FLAGS: dict[str, frozenset[str]] = {
    "baseline": frozenset(),
    "sse42": frozenset({"sse4_2"}),
    "avx": frozenset({"sse4_2", "avx"}),
    "avx2": AVX2_FLAGS,
    "avx512": AVX512_FLAGS,
    "vbmi": frozenset({"avx512vbmi"}),
    "vnni": frozenset({"avx512_vnni"}),
    "bf16": frozenset({"avx512_bf16"}),
    "avxvnni": frozenset({"avx_vnni"}),
    "macos": frozenset(),
    "metal": frozenset(),
    "arm64": frozenset(),
    "dotprod": frozenset({"asimddp"}),
    "generic": frozenset(),
}
# x86 levels, best first: (name, flags needed, ggml switches on). Every switch not on is turned
# off explicitly: with GGML_NATIVE=OFF, ggml turns SSE4.2 to BMI2 on by default. AMX never: its
# repacked kernels crash in VMs that do not grant AMX state (seen on our CI machines).
X86_SWITCHES = ("SSE42", "AVX", "AVX2", "FMA", "F16C", "BMI2")
X86_LEVELS = (
    ("avx2", AVX2_FLAGS, X86_SWITCHES),
    ("avx", TOKEN_FLAGS["avx"], ("SSE42", "AVX")),
    ("sse42", TOKEN_FLAGS["sse42"], ("SSE42",)),
    ("baseline", TOKEN_FLAGS["baseline"], ()),
)
# AVX-512 where the CPU has it (prompt reading ~1.35x, generation ~1.14x faster than AVX2 here),
# with these extensions when present.
X86_EXTRAS = (("vbmi", "AVX512_VBMI"), ("vnni", "AVX512_VNNI"), ("bf16", "AVX512_BF16"))
FLAG_NAMES = {"asimddp": "the dot-product instructions (asimddp)"}


@dataclass(frozen=True)
class Variant:
    name: str
    cmake_args: str


def build_variant(arch: str, system: str, flags: set[str] | frozenset[str]) -> Variant:
    """The llama.cpp build for a CPU of this architecture, OS and feature flags (Linux names)."""
    arch = arch.lower()
    if system == "Darwin" and arch in ARM64_ARCHES:
        return Variant("metal", "")  # llama.cpp's own default there: Metal and Accelerate
    if arch in X86_ARCHES:
        x86 = _x86_variant(flags)
        if system == "Darwin":  # ggml's Metal kernels are written for Apple GPUs
            return Variant(f"macos-{x86.name}", f"{x86.cmake_args} -DGGML_METAL=OFF")
        return x86
    if arch in ARM64_ARCHES:
        if "asimddp" in flags:
            return Variant("arm64-dotprod", "-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8.2-a+dotprod")
        return Variant("arm64", "-DGGML_NATIVE=OFF")
    return Variant("generic", "-DGGML_NATIVE=OFF")


def _x86_variant(flags: set[str] | frozenset[str]) -> Variant:
    name, on = next((name, on) for name, needs, on in X86_LEVELS if needs <= flags)
    args = ["-DGGML_NATIVE=OFF"] + [f"-DGGML_{s}={'ON' if s in on else 'OFF'}" for s in X86_SWITCHES]
    has_avx2 = name == "avx2"
    if has_avx2 and flags >= AVX512_FLAGS:
        name = "avx512"
        args.append("-DGGML_AVX512=ON")
        for token, switch in X86_EXTRAS:
            if TOKEN_FLAGS[token] <= flags:
                name += f"-{token}"
                args.append(f"-DGGML_{switch}=ON")
    if has_avx2 and "avx_vnni" in flags:
        name += "-avxvnni"
        args.append("-DGGML_AVX_VNNI=ON")
    return Variant(name, " ".join(args))


def required_flags(name: str) -> frozenset[str]:
    """The CPU flags a variant's build uses (unknown tokens need nothing we can check)."""
    return frozenset().union(*(TOKEN_FLAGS.get(token, frozenset()) for token in name.split("-")))


def cannot_run_here(name: str | None, flags: set[str] | frozenset[str]) -> str | None:
    """Why a build of variant `name` would die with an illegal instruction here, or None."""
    missing = sorted(required_flags(name or "") - flags)
    if not name or not missing:
        return None
    needs = [FLAG_NAMES.get(flag, flag.upper()) for flag in missing]
    listed = needs[0] if len(needs) == 1 else f"{', '.join(needs[:-1])} and {needs[-1]}"
    return f"this build of llama.cpp ({name}) needs {listed}, which this CPU lacks: run scripts/install.sh again to build for it"


def detect() -> tuple[str, str, frozenset[str]]:
    """This machine's architecture, OS and CPU flags (named as Linux's /proc/cpuinfo names them)."""
    system, arch = platform.system(), platform.machine().lower()
    if system == "Darwin":  # no /proc; under Rosetta sysctl reports the x86 features it emulates
        return arch, system, _darwin_flags() if arch in X86_ARCHES else frozenset()
    return arch, system, _linux_flags()


def _linux_flags() -> frozenset[str]:
    """The first `flags` (x86) or `Features` (ARM) line of /proc/cpuinfo."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def _darwin_flags() -> frozenset[str]:
    """sysctl's x86 feature names (`AVX1.0`, `SSE4.2`, `AVX512VNNI`) in Linux's spelling."""
    words = f"{_sysctl('machdep.cpu.features')} {_sysctl('machdep.cpu.leaf7_features')}".lower().split()
    renamed = {"avx1.0": "avx", "sse4.2": "sse4_2", "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16"}
    return frozenset(renamed.get(word, word) for word in words)


def _sysctl(key: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def this_cpu() -> Variant:
    """The variant this CPU runs best."""
    return build_variant(*detect())


def chosen() -> Variant:
    """The variant to build: this CPU's, or the one named by $QWEN_LSP_CPU_VARIANT."""
    forced = os.environ.get(FORCE_ENV)
    if not forced:
        return this_cpu()
    arch, system, _ = detect()
    variant = build_variant(arch, system, required_flags(forced))
    if variant.name != forced:
        raise SystemExit(f"{FORCE_ENV}={forced} is no build variant for this {system} {arch} CPU (its own: {this_cpu().name})")
    return variant


def recorded_variant(prefix: Path | None = None) -> str | None:
    """The variant install.sh built this environment's llama.cpp for, if it recorded one."""
    try:
        return (Path(prefix or sys.prefix) / MARKER_NAME).read_text().strip() or None
    except OSError:
        return None


def require_runnable_build(prefix: Path | None = None, flags: frozenset[str] | None = None) -> None:
    """Refuse to load a llama.cpp built for instructions this CPU lacks (it would die of SIGILL)."""
    problem = cannot_run_here(recorded_variant(prefix), detect()[2] if flags is None else flags)
    if problem:
        # Imported here: install.sh runs this file with the bare system Python.
        from qwen_lsp.engine.base import ModelUnavailable

        raise ModelUnavailable(problem)


if __name__ == "__main__":
    variant = chosen()
    print(variant.name)
    print(variant.cmake_args)
