#!/usr/bin/env bash
# Install qwen-lsp and the bundled model into a virtual environment (.venv by default).
#   scripts/install.sh            the server, its CLI and the model
#   scripts/install.sh test       ... plus what the test suite needs
#   scripts/install.sh test,bench ... plus the benchmarks' plotting
# Environment: QWEN_LSP_VENV (where to install), PYTHON (interpreter, 3.11+),
#   QWEN_LSP_CPU_VARIANT (build llama.cpp for another CPU variant than this one, e.g. sse42).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${QWEN_LSP_VENV:-.venv}
extras=model${1:+,$1}
python=${PYTHON:-python3}
llama_version=0.3.36

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip

# llama-cpp-python is a source package: it compiles llama.cpp (about 13 minutes on 2 cores), so
# build its wheel once per CPU variant and keep it. qwen_lsp/engine/cpu.py picks the variant (run
# with the bare Python: the venv has no qwen-lsp yet): the instructions this CPU has (x86 with or
# without AVX2 or AVX-512, never AMX; ARM64 with or without dot product), not -march=native, and
# on Apple silicon llama.cpp's own Metal build. QWEN_LSP_CPU_VARIANT=<name> builds another one.
# The name is recorded in the venv, so the server can refuse a build this CPU cannot run.
cpu=$("$python" qwen_lsp/engine/cpu.py)
variant=${cpu%%$'\n'*} ggml=${cpu#*$'\n'}
wheels=${XDG_CACHE_HOME:-$HOME/.cache}/qwen-lsp/wheels/llama-cpp-python-$llama_version-$variant
if ! compgen -G "$wheels/llama_cpp_python-$llama_version-*.whl" >/dev/null; then
  echo "Building llama-cpp-python $llama_version for $variant (once; about 13 minutes on 2 cores)..." >&2
  CMAKE_ARGS="$ggml -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL=$(getconf _NPROCESSORS_ONLN) \
    "$venv/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps --no-cache-dir \
      -w "$wheels" "llama-cpp-python==$llama_version"
fi

# pip keeps an installed llama-cpp-python of the same version: replace one built for another variant.
[ "$(cat "$venv/qwen-lsp-build-variant" 2>/dev/null)" = "$variant" ] ||
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall \
    --no-index --find-links "$wheels" "llama-cpp-python==$llama_version"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --find-links "$wheels" -e ".[$extras]"
echo "$variant" >"$venv/qwen-lsp-build-variant"
echo "qwen-lsp installed in $venv: $("$venv/bin/qwen-lsp" --version)" >&2
