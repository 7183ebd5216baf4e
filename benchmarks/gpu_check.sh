#!/usr/bin/env bash
# The prepared GPU check of the MNIST issue, as one command on a CUDA machine:
#   1. benchmarks/train_throughput.py on CUDA, batches 64 and 256 (img/s of a training step and
#      of evaluation, % of the convolution limit at the same shapes, conv share, CUDA peak memory);
#   2. a short training curve of configs/mnist-paper.toml (CURVE_S seconds, default 300), evaluated
#      every 250 steps on 2000 test images (configs/probes/mnist-paper-curve.toml);
#   3. the CPU config configs/mnist-cpu.toml on CUDA for CPU_CFG_S training seconds (default 300,
#      through --set train.max_seconds, so it ends with its own evaluation and metrics.json).
# Results go to $OUT (default runs/gpu-check): nvidia-smi.txt, throughput.md, throughput.err,
# curve.out, curve-log.jsonl, cpu-config.out, cpu-config-metrics.json. Needs torch with CUDA importable by $PY (default python) and the
# MNIST arrays in the data cache (copy ~/.cache/scnf, or set SCNF_DATA): a machine without
# internet access cannot fetch them.
#   OUT=/tmp/gpu CURVE_S=300 bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
PY=${PY:-python}
CURVE_S=${CURVE_S:-300}
CPU_CFG_S=${CPU_CFG_S:-300}
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
rm -rf "$OUT/cpu-config"
"$PY" -m scnf train configs/mnist-cpu.toml --device cuda --set train.threads=0 \
  --set "train.max_seconds=$CPU_CFG_S" --out "$OUT/cpu-config" > "$OUT/cpu-config.out" 2>&1
echo "cpu config on cuda: exit $?" >&2
cp "$OUT/cpu-config/metrics.json" "$OUT/cpu-config-metrics.json" 2>/dev/null
cat "$OUT/throughput.md" "$OUT/curve-log.jsonl" "$OUT/cpu-config-metrics.json" 2>/dev/null
