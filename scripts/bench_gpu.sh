#!/usr/bin/env bash
# `drift bench gpu` on a GPU machine, from the source tree (nothing installed): the wheels of
# `make gpu-wheels` in .whl/, if there, go to a private directory first (the machine may have no
# network). Run from the repository root:
#     bash scripts/bench_gpu.sh [OUT_DIR] [drift bench gpu options...]
# OUT_DIR defaults to $OUT, else bench_gpu/; it receives bench_gpu.json, bench_gpu.md, log.txt and
# nvidia-smi.txt. docs/real_models.md says what is measured and how long it takes.
set -euo pipefail
out=${1:-${OUT:-bench_gpu}}
[ $# -gt 0 ] && shift
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" >"$out/nvidia-smi.txt"
python3 -m drift.cli bench gpu --out "$out" "$@" 2>&1 | tee "$out/log.txt"
