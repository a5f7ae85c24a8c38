#!/usr/bin/env bash
# Install qwen-lsp and the bundled model into a virtual environment (.venv by default).
#   scripts/install.sh            the server, its CLI and the model
#   scripts/install.sh test       ... plus what the test suite needs
#   scripts/install.sh test,bench ... plus the benchmarks' plotting
# Environment: QWEN_LSP_VENV (where to install), PYTHON (interpreter, 3.11+).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${QWEN_LSP_VENV:-.venv}
extras=model${1:+,$1}
python=${PYTHON:-python3}
llama_version=0.3.36

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip

# llama-cpp-python is a source package: it compiles llama.cpp (about 13 minutes on 2 cores), so
# build its wheel once and keep it. The build names the CPU features it uses instead of
# -march=native: a native build on CPUs that report AMX repacks weights for AMX kernels, which
# crash in VMs that do not grant AMX state (seen on our own CI machines). AVX-512 is used where
# the CPU has it (prompt reading ~1.35x, generation ~1.14x faster than AVX2 here).
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
has() { [[ "$cpu_flags" == *" $1 "* ]]; }
variant=avx2
ggml="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
if has avx512f && has avx512bw && has avx512vl && has avx512dq && has avx512cd; then
  variant=avx512 ggml="$ggml -DGGML_AVX512=ON"
  has avx512vbmi && variant=$variant-vbmi ggml="$ggml -DGGML_AVX512_VBMI=ON"
  has avx512_vnni && variant=$variant-vnni ggml="$ggml -DGGML_AVX512_VNNI=ON"
  has avx512_bf16 && variant=$variant-bf16 ggml="$ggml -DGGML_AVX512_BF16=ON"
fi
has avx_vnni && variant=$variant-avxvnni ggml="$ggml -DGGML_AVX_VNNI=ON"
wheels=${XDG_CACHE_HOME:-$HOME/.cache}/qwen-lsp/wheels/llama-cpp-python-$llama_version-$variant
if ! compgen -G "$wheels/llama_cpp_python-$llama_version-*.whl" >/dev/null; then
  echo "Building llama-cpp-python $llama_version for $variant (once; about 13 minutes on 2 cores)..." >&2
  CMAKE_ARGS="$ggml -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$venv/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps --no-cache-dir \
      -w "$wheels" "llama-cpp-python==$llama_version"
fi

"$venv/bin/python" -m pip install -q --disable-pip-version-check --find-links "$wheels" -e ".[$extras]"
echo "qwen-lsp installed in $venv: $("$venv/bin/qwen-lsp" --version)" >&2
