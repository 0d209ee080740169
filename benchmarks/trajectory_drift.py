"""How far NumPy training and torch training part over N steps of the seed model (the measurement
behind the trajectory bounds in docs/numpy-training.md): the worst relative difference over the loss and every
weight after steps 1, 10, 50 and N, in float64 and float32, for two schedules:

- seed: the seed's own run from its first step (AdamW lr 0.01, weight decay 0.01, clip 1, the
  piecewise-linear schedule at 391 batches per epoch over 25 epochs), what `convvit check --steps` runs;
- squeezed: the whole schedule squeezed into the N steps (10 steps per epoch, 10 epochs: warm-up to
  lr 0.01 by step 40), with label smoothing 0.1, a harsher test.

    python benchmarks/trajectory_drift.py --out benchmarks/results/trajectory_drift.json --overwrite
"""

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

from numpy_vit import seed_config
from numpy_vit.io import check_new_file, write_json
from torch_vit.trajectory import TRAJECTORY_BOUNDS, run_trajectory

SEED = seed_config()
SCHEDULES = {"seed": dict(steps_per_epoch=391, epochs=25, label_smoothing=0.0),
             "squeezed": dict(steps_per_epoch=10, epochs=10, label_smoothing=0.1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=None)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    try:
        check_new_file(args.out, args.overwrite)  # before anything is measured
    except ValueError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    results = []
    for name, schedule in SCHEDULES.items():
        for dtype in (np.float64, np.float32):
            started = time.perf_counter()
            tr = run_trajectory(SEED, steps=args.steps, dtype=dtype, batch=args.batch, **schedule)
            at = {str(s): tr.worst[s - 1] for s in (1, 10, 50, args.steps) if s <= args.steps}
            row = dict(schedule=name, dtype=np.dtype(dtype).name, worst_after_step=at, worst=max(tr.worst),
                       bound=TRAJECTORY_BOUNDS[np.dtype(dtype)], first_failure=tr.first_failure,
                       seconds=time.perf_counter() - started)
            results.append(row)
            print(f"{name:<9} {row['dtype']}  worst after steps " +
                  ", ".join(f"{k}: {v:.1e}" for k, v in at.items()) +
                  f"  (bound {row['bound']:.0e}: {'held' if not tr.first_failure else 'exceeded'})", flush=True)
    machine = dict(python=platform.python_version(), numpy=np.__version__, torch=torch.__version__,
                   cores=os.cpu_count(), threads=torch.get_num_threads())
    if args.out:
        write_json(args.out, dict(steps=args.steps, batch=args.batch, machine=machine, results=results))


if __name__ == "__main__":
    sys.exit(main())
