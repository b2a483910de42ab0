#!/usr/bin/env bash
# The GPU path on a machine with a CUDA GPU, in one go (under 8 minutes on one H200): the `gpu`-marked tests, a
# real training run at 256 px with AMP through the real losses (scripts/gpu_train_check.py), and the train benchmark
# (benchmarks/train.py, real losses, the default model and ViT-L at 512 px). It prints the figures and writes them
# under $OUT (default /tmp/bodymap-gpu-check).
#
# It installs nothing. The machine needs Python >= 3.11 with torch (CUDA), timm, numpy, scipy, OpenCV and PyYAML
# (timm's dependency); the rest comes with it: src/ and tests/ of this checkout, and the bundle that
# `scripts/gpu_bundle.py` prepares on the development machine (a small template, rendered people with CSE inputs,
# and pytest's pure-Python wheels, ~20 MB, git-ignored under build/gpu_bundle):
#
#   .venv/bin/python scripts/gpu_bundle.py            # once, where the project's environment is
#   scripts/gpu_check.sh                              # on the GPU machine, from the repository root
#
# Environment: PYTHON (default python3), BUNDLE (default build/gpu_bundle), OUT, STEPS (training steps, 300).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BUNDLE=${BUNDLE:-build/gpu_bundle}
OUT=${OUT:-/tmp/bodymap-gpu-check}
STEPS=${STEPS:-300}
start=$(date +%s)
failed=()
section() { printf '\n== %s (%ds)\n' "$1" $(( $(date +%s) - start )); }
# step NAME LIMIT_S LOG COMMAND...: run under a time limit, its output shown and kept in $OUT/NAME.txt; a failure is
# reported at the end and does not stop the later steps (a GPU session is worth using whole).
step() {
  local name=$1 limit=$2; shift 2
  set +e
  timeout "$limit" "$@" 2>>"$OUT/$name.log" | tee -a "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then echo "!! $name failed (exit $rc; stderr in $OUT/$name.log)"; failed+=("$name"); fi
}

section "environment"
[ -f "$BUNDLE/bundle.json" ] || { echo "no bundle at $BUNDLE: run scripts/gpu_bundle.py where the project is installed"; exit 2; }
"$PYTHON" - <<'EOF'
import importlib.util
import sys

missing = [m for m in ("torch", "timm", "numpy", "scipy", "cv2", "yaml") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: missing {', '.join(missing)}; this check installs nothing")
import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device")
import cv2, numpy, scipy, timm  # noqa: E401

props = torch.cuda.get_device_properties(0)
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), timm {timm.__version__}, "
      f"numpy {numpy.__version__}, scipy {scipy.__version__}, opencv {cv2.__version__}")
print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s)")
EOF
rm -rf "$OUT" && mkdir -p "$OUT"
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
for wheel in "$BUNDLE"/wheels/*.whl; do "$PYTHON" -m zipfile -e "$wheel" "$site"; done
export PYTHONPATH="$PWD/src:$site${PYTHONPATH:+:$PYTHONPATH}"
export BODYMAP_TEST_TEMPLATE="$PWD/$BUNDLE/template" BODYMAP_TEST_RENDER="$PWD/$BUNDLE/render"
export BODYMAP_TRACKING=0 MPLBACKEND=Agg

section "gpu-marked tests (tests/test_devices.py, tests/test_amp.py)"
step pytest 120 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider --durations=5 tests/test_devices.py tests/test_amp.py

section "training: $STEPS steps at 256 px, batch 8, float16 AMP (then bfloat16), real losses"
step train 180 "$PYTHON" scripts/gpu_train_check.py --bundle "$BUNDLE" --steps "$STEPS" --size 256 --batch 8 \
  --out "$OUT/train"

section "benchmarks/train.py (real losses, float16 AMP): the default model and ViT-L at 512 px, then 256 px batch 8"
step benchmark 120 "$PYTHON" benchmarks/train.py --template "$BUNDLE/template" --steps 5
step benchmark 45 "$PYTHON" benchmarks/train.py --template "$BUNDLE/template" --configs bodymap_vit --sizes 256 \
  --batch 8 --steps 10

section "done; figures in $OUT"
if [ ${#failed[@]} -ne 0 ]; then echo "failed: ${failed[*]}"; exit 1; fi
