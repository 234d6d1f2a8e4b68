#!/usr/bin/env bash
# The one command for whoever has a lent GPU (an H100 or H200 with jax, torch and transformers installed): within
# 9 minutes (call the device with a timeout of about 560 s), most telling first: the train benchmark --size large
# --dtype bfloat16 (MFU, peak GPU memory), the inference benchmark (both libraries), parity tests on the GPU
# (float32, and bfloat16 against float32) and the largest batch that fits per remat policy; one markdown table to
# stdout and $OUT/device_check.md (step output: device_check.log). `python -m gliner_jax.bench device_check` drives
# the steps.
#
#   here, first:  scripts/fetch_device_wheels.sh          (the wheels the GPU image lacks, into .device-wheels/)
#   there:        scripts/device_check.sh                  (carry .device-wheels; $OUT: where the table goes)
#   here:         scripts/device_check.sh --cpu-dry-run    (the same steps at toy sizes on the CPU, a few minutes)
#
# PYTHON picks the interpreter (default: python3 there; .venv/bin/python here, if present).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--cpu-dry-run" ]; then
  shift
  python=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
  export JAX_PLATFORMS=cpu PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  exec "$python" -m gliner_jax.bench device_check --cpu-dry-run --deadline-s 1800 --out "${OUT:-runs/device_check}" "$@"
fi

python=${PYTHON:-python3}
if ! compgen -G ".device-wheels/*.whl" > /dev/null; then
  echo "error: no .device-wheels/: run scripts/fetch_device_wheels.sh where pip reaches an index, and carry it" >&2
  exit 1
fi
site=/tmp/gliner-jax-device-site
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
  .device-wheels/*.whl
export PYTHONPATH="$site:$PWD"
export HF_HUB_OFFLINE=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
exec "$python" -m gliner_jax.bench device_check --out "${OUT:-runs/device_check}" "$@"
