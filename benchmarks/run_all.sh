#!/usr/bin/env bash
# The benchmarks behind the docs' figures, one after another, each writing its JSON into
# benchmarks/results/ (--overwrite: each replaces its earlier results). Not here, each with its own command on
# its docs page: train_throughput.py --candidates, run_overhead.py (a whole CIFAR-10 run), suite_time.py (the test
# suite, alone) and gpu_train.py (a GPU). Run it alone on the machine (timings), from the project's root:
#   benchmarks/run_all.sh [CHECKPOINT ...]
# The checkpoints (default: runs/muon-s4 and runs/synthetic-numpy, where they exist) feed
# float32_error.py and flip_tta.py (which evaluates each on its own --data); `convvit train` makes them (docs/training.md, docs/parity.md).
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results
python benchmarks/numpy_vs_torch.py --out $out/numpy_vs_torch.json --overwrite
python benchmarks/train_throughput.py --recipe seed --out $out/train_throughput.json --overwrite
python benchmarks/train_throughput.py --recipe default --out $out/train_throughput_default.json --overwrite
python benchmarks/profile_step.py --recipe default --out $out/profile_step.json --overwrite
python benchmarks/profile_numpy.py --out $out/profile_numpy.json --overwrite
python benchmarks/parity_errors.py --draws 200 --out $out/parity_errors.json --overwrite
python benchmarks/trajectory_drift.py --out $out/trajectory_drift.json --overwrite
checkpoints=("$@")
if [ ${#checkpoints[@]} -eq 0 ]; then
  for run in runs/muon-s4 runs/synthetic-numpy; do
    if [ -f "$run/checkpoint.pt" ]; then checkpoints+=("$run/checkpoint.pt"); fi
  done
fi
if [ ${#checkpoints[@]} -gt 0 ]; then
  python benchmarks/float32_error.py "${checkpoints[@]}" --out $out/float32_error.json --overwrite
  python benchmarks/flip_tta.py "${checkpoints[@]}" --out $out/flip_tta.json --overwrite
else
  echo "no checkpoints: skipping float32_error.py and flip_tta.py (train runs/muon-s4 and runs/synthetic-numpy first: docs/experiments.md, docs/parity.md)" >&2
fi
