#!/usr/bin/env bash
# The prepared GPU check of the MNIST issue, as one command on a CUDA machine:
#   1. benchmarks/train_throughput.py on CUDA, batches 64 and 256 (img/s of a training step and
#      of evaluation, % of the convolution limit at the same shapes, conv share, CUDA peak memory);
#   2. a short training curve of configs/mnist-paper.toml (CURVE_S seconds, default 300), evaluated
#      every 250 steps on 2000 test images (configs/probes/mnist-paper-curve.toml).
# Results go to $OUT (default runs/gpu-check): nvidia-smi.txt, throughput.md, throughput.err,
# curve.out, curve-log.jsonl. Needs torch with CUDA importable by $PY (default python) and the
# MNIST arrays in the data cache (copy ~/.cache/scnf, or set SCNF_DATA): a machine without
# internet access cannot fetch them.
#   OUT=/tmp/gpu CURVE_S=300 bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
PY=${PY:-python}
CURVE_S=${CURVE_S:-300}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
  || { echo "gpu_check: torch cannot see a CUDA device" >&2; exit 2; }
"$PY" benchmarks/train_throughput.py --device cuda --batches 64,256 --repeats 3 \
  > "$OUT/throughput.md" 2> "$OUT/throughput.err"
echo "throughput: exit $?" >&2
rm -rf "$OUT/curve"
timeout "$CURVE_S" "$PY" -m scnf train configs/probes/mnist-paper-curve.toml --device cuda --out "$OUT/curve" \
  > "$OUT/curve.out" 2>&1
echo "curve: exit $? (124 = stopped at ${CURVE_S} s, as intended)" >&2
cp "$OUT/curve/log.jsonl" "$OUT/curve-log.jsonl" 2>/dev/null
cat "$OUT/throughput.md" "$OUT/curve-log.jsonl" 2>/dev/null
