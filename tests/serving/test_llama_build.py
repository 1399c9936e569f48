"""llama.cpp's build against the CPU it runs on: pip builds llama-cpp-python for the CPU it
builds on and caches the wheel, so a venv moved to (or a cache shared with) another machine
serves with the wrong kernels. The engine says so, with the command that rebuilds it."""

from __future__ import annotations

from serving.llama_context import REBUILD, build_mismatch

# llama_print_system_info() on the Intel Xeon (AMX) and on the AMD EPYC (AVX2 only) machines.
XEON = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX_VNNI = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
    "BMI2 = 1 | AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | "
    "AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
EPYC = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
XEON_FLAGS = {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"}
EPYC_FLAGS = {"avx", "avx2", "fma", "bmi2"}


def test_a_build_for_this_cpu_says_nothing() -> None:
    assert build_mismatch(XEON, XEON_FLAGS) == []
    assert build_mismatch(EPYC, EPYC_FLAGS) == []


def test_a_wheel_built_on_the_xeon_warns_on_the_epyc_that_it_may_crash() -> None:
    (line,) = build_mismatch(XEON, EPYC_FLAGS)
    assert "AMX_INT8, AVX512, AVX512_BF16, AVX512_VNNI, which this CPU lacks" in line
    assert "illegal instruction" in line and line.endswith(REBUILD)


def test_a_wheel_built_on_the_epyc_is_slow_on_the_xeon() -> None:
    (line,) = build_mismatch(EPYC, XEON_FLAGS)
    assert "this CPU has AMX_INT8, AVX512, AVX512_BF16, AVX512_VNNI" in line
    assert "-DGGML_NATIVE=ON" in line
