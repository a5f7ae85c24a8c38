"""Which llama.cpp build a CPU gets (issue 15 item 19), and the refusal to load one it cannot run."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_lsp.engine import cpu
from qwen_lsp.engine.base import GenerationRequest, ModelUnavailable
from qwen_lsp.engine.cpu import build_variant, cannot_run_here, required_flags
from qwen_lsp.engine.tokens import Prompt

ROOT = Path(__file__).resolve().parent.parent
# Real /proc/cpuinfo lines, trimmed to what matters.
HASWELL = {"fpu", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "popcnt", "aes", "xsave", "avx", "f16c", "fma", "bmi1", "avx2", "bmi2"}
SANDY_BRIDGE = {"fpu", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "popcnt", "aes", "xsave", "avx"}
CELERON_N4020 = {"fpu", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "popcnt", "aes", "movbe", "rdrand"}  # Gemini Lake: no AVX
AVX512_EXTRAS = {"avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl", "avx512vbmi", "avx512_vnni", "avx512_bf16", "avx_vnni"}
SAPPHIRE_RAPIDS = HASWELL | AVX512_EXTRAS | {"amx_tile", "amx_int8", "amx_bf16"}
PI_4 = {"fp", "asimd", "evtstrm", "crc32", "cpuid"}  # Cortex-A72: no dot product
PI_5 = {"fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp", "cpuid", "asimdrdm"}
PI_5 |= {"lrcpc", "dcpop", "asimddp"}  # Cortex-A76: dot product


def switches(args: str) -> dict[str, str]:
    return dict(arg.removeprefix("-D").split("=", 1) for arg in args.split())


def test_x86_with_avx2_builds_avx2_and_no_avx512():
    variant = build_variant("x86_64", "Linux", HASWELL)
    assert variant.name == "avx2"
    on = switches(variant.cmake_args)
    assert on["GGML_NATIVE"] == "OFF" and on["GGML_AVX2"] == on["GGML_FMA"] == on["GGML_F16C"] == "ON"
    assert "GGML_AVX512" not in on


@pytest.mark.parametrize(
    ("flags", "name", "on"), [(SANDY_BRIDGE, "avx", {"GGML_SSE42", "GGML_AVX"}), (CELERON_N4020, "sse42", {"GGML_SSE42"})]
)
def test_x86_without_avx2_turns_off_every_instruction_it_lacks(flags, name, on):
    """ggml turns AVX2, FMA, F16C and BMI2 on by default once GGML_NATIVE is off: each must be off."""
    variant = build_variant("x86_64", "Linux", flags)
    assert variant.name == name
    args = switches(variant.cmake_args)
    assert {key for key, value in args.items() if value == "ON"} == on
    assert {"GGML_AVX2", "GGML_FMA", "GGML_F16C", "GGML_BMI2"} <= args.keys()


def test_x86_with_avx512_and_amx_uses_avx512_but_never_amx():
    variant = build_variant("x86_64", "Linux", SAPPHIRE_RAPIDS)
    assert variant.name == "avx512-vbmi-vnni-bf16-avxvnni"
    on = switches(variant.cmake_args)
    assert on["GGML_AVX512"] == on["GGML_AVX512_BF16"] == on["GGML_AVX_VNNI"] == "ON"
    assert not any("AMX" in key for key in on)


def test_arm64_linux_gets_no_x86_flags_and_dot_product_only_where_the_cpu_has_it():
    pi5, pi4 = build_variant("aarch64", "Linux", PI_5), build_variant("aarch64", "Linux", PI_4)
    assert (pi5.name, pi4.name) == ("arm64-dotprod", "arm64")
    assert switches(pi5.cmake_args) == {"GGML_NATIVE": "OFF", "GGML_CPU_ARM_ARCH": "armv8.2-a+dotprod"}
    assert switches(pi4.cmake_args) == {"GGML_NATIVE": "OFF"}


def test_macos_on_apple_silicon_keeps_llama_cpps_metal_build():
    assert build_variant("arm64", "Darwin", set()) == cpu.Variant("metal", "")


def test_macos_on_intel_builds_for_its_cpu_without_metal():
    variant = build_variant("x86_64", "Darwin", HASWELL)
    assert variant.name == "macos-avx2"
    assert switches(variant.cmake_args)["GGML_METAL"] == "OFF"


def test_every_variant_needs_exactly_the_flags_it_was_chosen_for():
    for arch, system, flags in [("x86_64", "Linux", SAPPHIRE_RAPIDS), ("x86_64", "Linux", CELERON_N4020), ("aarch64", "Linux", PI_5)]:
        name = build_variant(arch, system, flags).name
        assert required_flags(name) <= flags
        assert build_variant(arch, system, required_flags(name)).name == name


def test_a_build_for_missing_instructions_is_named_with_what_is_missing():
    assert cannot_run_here("avx2", SANDY_BRIDGE) == (
        "this build of llama.cpp (avx2) needs AVX2, BMI2, F16C and FMA, which this CPU lacks: run scripts/install.sh again to build for it"
    )
    assert "dot-product" in (cannot_run_here("arm64-dotprod", PI_4) or "")
    assert cannot_run_here("sse42", HASWELL) is None
    assert cannot_run_here(None, CELERON_N4020) is None  # not installed by install.sh: nothing to check


def test_the_install_script_can_force_a_variant_with_the_bare_python():
    """install.sh runs the module as a file before the venv exists (standard library only)."""
    run = subprocess.run(
        [sys.executable, "-I", str(ROOT / "qwen_lsp/engine/cpu.py")],
        env={**os.environ, cpu.FORCE_ENV: "sse42"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if cpu.detect()[0] not in cpu.X86_ARCHES:
        assert run.returncode != 0 and cpu.FORCE_ENV in run.stderr
        return
    assert run.returncode == 0, run.stderr
    name, args = run.stdout.splitlines()
    assert name == "sse42" and switches(args)["GGML_AVX"] == "OFF"


async def test_an_engine_on_a_cpu_its_build_cannot_run_fails_with_the_reason(model_path, tmp_path, monkeypatch):
    """Instead of dying of SIGILL inside llama.cpp, the load fails with a message."""
    from qwen_lsp.engine.local import LocalEngine, LocalSettings

    (tmp_path / cpu.MARKER_NAME).write_text("avx2\n")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(cpu, "detect", lambda: ("x86_64", "Linux", frozenset(SANDY_BRIDGE)))
    engine = LocalEngine(LocalSettings(), lambda progress: model_path)
    request = GenerationRequest(prompt=Prompt.template("def add(a, b):\n    return"), max_tokens=4)
    with pytest.raises(ModelUnavailable, match="needs AVX2, BMI2, F16C and FMA, which this CPU lacks"):
        await asyncio.wait_for(engine.generate(request).complete(), 60)
    engine.close()


@pytest.mark.parametrize(("machine", "name"), [("x86_64", "macos-avx2"), ("arm64", "metal")])
def test_macos_reads_its_cpu_from_sysctl(monkeypatch, machine, name):
    """macOS has no /proc/cpuinfo: an Intel Mac's features come from sysctl."""
    sysctl = {
        "machdep.cpu.features": "FPU VME SSE3 SSSE3 FMA SSE4.1 SSE4.2 POPCNT AES XSAVE AVX1.0 RDRAND F16C",
        "machdep.cpu.leaf7_features": "SMEP BMI1 AVX2 BMI2 ERMS",
    }
    monkeypatch.setattr(cpu.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(cpu.platform, "machine", lambda: machine)
    monkeypatch.setattr(cpu, "_sysctl", lambda key: sysctl.get(key, ""))
    assert cpu.this_cpu().name == name
