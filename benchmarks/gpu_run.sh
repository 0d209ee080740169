#!/usr/bin/env bash
# Issue 18's GPU check in one call of the device tool (at most about 8 minutes; every step under its own timeout, so
# that one that hangs leaves time to the rest). From the project's root, on the machine with the GPU:
#   bash benchmarks/gpu_run.sh
# It needs CIFAR-10's JPEG copy as .data/cifar10-jpeg.tar.gz (CIFAR_TAR overrides): ../shared does not travel to the
# device machine, so copy it into the checkout first, ignored by git, and carry it:
#   mkdir -p .data && cp ../shared/data/cifar10-jpeg.tar.gz .data/ && echo /.data/ >> .git/info/exclude
#   (device tool) run(command="bash benchmarks/gpu_run.sh", carry=[".data"], timeout_s=560)
# Results go to $OUT (the device tool's folder; /tmp/gpu_run elsewhere), each a benchmarks/gpu_train.py JSON:
#   gpu_train.json                the default recipe, float32, 24 epochs (the goal: at most 60 s end to end)
#   gpu_train_eager_1epoch.json   one epoch without the CUDA graph: what the graph pays
#   gpu_train_amp_compile.json    --amp --compile, 24 epochs, if the time allows
#   smoke.json, gpu_run.log, pytest.log
# Copy the first three into benchmarks/results/ and commit them.
# A rehearsal of this script on a machine without a GPU (every step but the CUDA ones, one epoch on the CPU):
#   GPU_RUN_ARGS="--device cpu --epochs 1" OUT=/tmp/gpu_rehearsal bash benchmarks/gpu_run.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_run}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}  # the device machine's python3 is the one with torch
TAR=${CIFAR_TAR:-.data/cifar10-jpeg.tar.gz}
DATA=${DATA_DIR:-/tmp/cifar10-jpeg}
ARGS=${GPU_RUN_ARGS:-}  # added to every benchmarks/gpu_train.py command below (a rehearsal's --device cpu)
BUDGET=${BUDGET_S:-480}  # the runs after the first start only while this many seconds are not spent
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
say() { echo "[gpu_run $(elapsed) s] $*"; }

{  # everything below also goes to $OUT/gpu_run.log (tee ends before the script does: no lost last lines)

say "machine"
nvidia-smi -L || true
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__,
'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'NO CUDA')"

say "data: $TAR -> $DATA"
if [ ! -f "$TAR" ]; then say "no $TAR: see the top of this script"; exit 2; fi
echo "45b041e867f5a40f79bfde38d3dd1fd511103d50068c1afecf6445e25234d4db  $TAR" | sha256sum -c - || exit 2
mkdir -p "$DATA" && tar xzf "$TAR" -C "$DATA" || exit 2
say "$(find "$DATA/train" -name '*.jpg' | wc -l) train and $(find "$DATA/test" -name '*.jpg' | wc -l) test images"

say "install (--no-deps)"
$PY -m pip install -q --no-deps --no-build-isolation -e . || { say "pip failed: PYTHONPATH instead"; export PYTHONPATH=$PWD; }

say "the tests of this script and the CUDA augmentation, CUDA ones included"
timeout 150 $PY -m pytest -q -p no:cacheprovider -rs parity_tests/test_gpu_train.py \
  parity_tests/test_augment.py::test_cuda_matches_cpu 2>&1 | tee "$OUT/pytest.log"

say "smoke: synthetic data, 2 epochs, CUDA graph"
GRAPH=""
if ! timeout 120 $PY benchmarks/gpu_train.py $ARGS --data synthetic --epochs 2 --out "$OUT/smoke.json" --overwrite; then
  GRAPH="--no-graph"
  say "the graphed smoke run failed: the runs below go without the CUDA graph"
fi

say "the default recipe, float32, 24 epochs $GRAPH"
main_limit=$([ -z "$GRAPH" ] && echo 240 || echo 330)  # every step launched from Python takes longer: still record it
timeout $main_limit $PY benchmarks/gpu_train.py $ARGS $GRAPH --data "imagefolder:$DATA" --out "$OUT/gpu_train.json" --overwrite
say "exit $?"

if [ -z "$GRAPH" ] && [ "$(elapsed)" -lt $(( BUDGET - 150 )) ]; then
  say "one epoch without the CUDA graph (what the graph pays)"
  timeout 90 $PY benchmarks/gpu_train.py $ARGS --no-graph --epochs 1 --data "imagefolder:$DATA" \
    --out "$OUT/gpu_train_eager_1epoch.json" --overwrite
  say "exit $?"
fi

left=$(( BUDGET - $(elapsed) ))
if [ "$left" -gt 90 ]; then
  say "--amp --compile, 24 epochs $GRAPH (timeout ${left} s)"
  timeout "$left" $PY benchmarks/gpu_train.py $ARGS $GRAPH --amp --compile --data "imagefolder:$DATA" \
    --out "$OUT/gpu_train_amp_compile.json" --overwrite
  say "exit $?"
else
  say "no time left for --amp --compile (${left} s)"
fi
say "done; results in $OUT: $(ls "$OUT" | tr '\n' ' ')"
} 2>&1 | tee -a "$OUT/gpu_run.log"
