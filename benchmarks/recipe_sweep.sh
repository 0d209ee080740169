#!/usr/bin/env bash
# The recipe search behind the default recipe: runs of the seed architecture that differ in one
# setting, side by side on one device, then one summary line per run.
#   benchmarks/recipe_sweep.sh SET DATA_SPEC OUT_DIR DEVICE [CACHE_DIR]
#   SET a: 24 epochs; the seed's recipe, and "A" = the seed's with RandAugment and erasing off, one change each
#   SET b: 12 epochs; "B" = crop and flip only, one change each (weight decay, batch, clipping, lr)
#   SET c: 12 epochs; "C" = the default recipe as it was then (crop (0.75, 1) and flip, batch 64, weight decay 0.1, warm-up
#          to 40% of the run), one or two changes each
#   SET d: 12 epochs; C with one change each (learning rate, weight decay 0.05, crop, warm-up)
#   SET e: 24 epochs; "D" = the default recipe of the time (AdamW), and D with one change each (the knee, label
#          smoothing)
#   SET f: 24 epochs; the default recipe with AdamW and with Muon, four seeds each (both also report an EMA, 0.999)
#   SET g: 24 epochs; the default recipe (Muon), and it with one change each to Muon (its learning rate, momentum)
#          or to the weight decay
#   e.g. SWEEP_TIMEOUT=450 benchmarks/recipe_sweep.sh a imagefolder:/data/cifar10-jpeg runs/sweep-a cuda
set -uo pipefail
set_=$1; data=$2; out=$3; device=$4; cache=${5:-$HOME/.cache/convvit}
declare -A runs
if [ "$set_" = a ]; then
  A="--recipe seed --epochs 24 --randaugment none --erasing 0"
  runs=([seed25]="--recipe seed" [seed24]="--recipe seed --epochs 24" [A]="$A" [A_ls0.1]="$A --label-smoothing 0.1"
        [A_lr0.005]="$A --lr 0.005" [A_peak4]="$A --peak-epoch 4" [A_nojitter]="$A --color-jitter none"
        [A_wd0.05]="$A --weight-decay 0.05")
elif [ "$set_" = c ]; then
  C="--recipe default --optimizer adamw --epochs 12 --weight-decay 0.1 --peak-epoch 4 --crop-scale 0.75,1"
  runs=([C]="$C" [C_wd0.2]="$C --weight-decay 0.2" [C_wd0.3]="$C --weight-decay 0.3" [C_wd0.5]="$C --weight-decay 0.5"
        [C_flip_wd0.2]="$C --crop-scale none --weight-decay 0.2" [C_bs32_wd0.2]="$C --batch-size 32 --weight-decay 0.2"
        [C_ls0.1_wd0.2]="$C --label-smoothing 0.1 --weight-decay 0.2")
elif [ "$set_" = d ]; then
  C="--recipe default --optimizer adamw --epochs 12 --weight-decay 0.1 --peak-epoch 4 --crop-scale 0.75,1"
  runs=([C_lr0.02]="$C --lr 0.02" [C_lr0.005]="$C --lr 0.005" [C_wd0.05]="$C --weight-decay 0.05"
        [C_flip]="$C --crop-scale none" [C_crop0.5]="$C --crop-scale 0.5,1" [C_peak2]="$C --peak-epoch 2")
elif [ "$set_" = e ]; then
  D="--recipe default --optimizer adamw"
  runs=([D]="$D" [D_knee20]="$D --knee-epoch 20" [D_knee21]="$D --knee-epoch 21" [D_knee22]="$D --knee-epoch 22"
        [D_ls0.1]="$D --label-smoothing 0.1")
elif [ "$set_" = f ]; then
  for s in 0 1 2 3; do
    runs[adamw_s$s]="--recipe default --optimizer adamw --ema 0.999 --seed $s"
    runs[muon_s$s]="--recipe default --optimizer muon --ema 0.999 --seed $s"
  done
elif [ "$set_" = g ]; then
  runs=([M]="" [M_mlr0.005]="--muon-lr 0.005" [M_mlr0.02]="--muon-lr 0.02" [M_mlr0.04]="--muon-lr 0.04"
        [M_mom0.9]="--muon-momentum 0.9" [M_mom0.98]="--muon-momentum 0.98" [M_wd0.035]="--weight-decay 0.035"
        [M_wd0.14]="--weight-decay 0.14")
elif [ "$set_" = b ]; then
  B="--recipe seed --epochs 12 --randaugment none --erasing 0 --color-jitter none"
  runs=([B]="$B" [B_wd0.05]="$B --weight-decay 0.05" [B_wd0.1]="$B --weight-decay 0.1" [B_bs64]="$B --batch-size 64"
        [B_clip0]="$B --clip 0" [B_wd0.05_lr0.003]="$B --weight-decay 0.05 --lr 0.003")
else
  echo "recipe_sweep.sh: expected a SET among a, b, c, d, e, f, g, got '$set_'" >&2
  exit 2
fi
mkdir -p "$out"
python3 -c "from torch_vit.data import load; load('$data', cache_dir='$cache', progress=False)"  # decode once
for name in "${!runs[@]}"; do
  OMP_NUM_THREADS=2 timeout "${SWEEP_TIMEOUT:-3000}" python3 -m torch_vit.cli train --data "$data" --cache-dir "$cache" \
    --device "$device" --no-progress --out "$out/$name" ${runs[$name]} > "$out/$name.log" 2>&1 &
done
wait
python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
for name in sorted(os.listdir(out)):
    path = os.path.join(out, name, "metrics.jsonl")
    if os.path.isfile(path):
        rows = [json.loads(l) for l in open(path)]
        ema = f"  EMA {100 * rows[-1]['ema_test_acc']:.2f}%" if "ema_test_acc" in rows[-1] else ""
        print(f"{name:<18} epochs done {len(rows):>2}  last test {100 * rows[-1]['test_acc']:.2f}%{ema}  "
              f"train {100 * rows[-1]['train_acc']:.2f}%  {sum(r['time'] for r in rows) / len(rows):.1f} s/epoch")
PY
