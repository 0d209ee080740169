"""How far NumPy and torch actually differ: the measurement behind the parity bounds in docs/parity.md.

Draws random configurations and values over the same ranges as parity_tests/test_parity_torch.py
(the whole ViT with its loss, and MhSelfAttention alone), runs torch_vit.parity on each, and reports
per dtype and regime the worst per-tensor relative error, the worst error relative to the largest
gradient G of the same backward, and how many tensors passed only by the floor.

    python benchmarks/parity_errors.py --draws 200 --out benchmarks/results/parity_errors.json --overwrite
"""

import argparse
import os
import platform
import sys

import numpy as np
import torch

import numpy_vit as nv
import torch_vit.model as tv
from numpy_vit.io import check_new_file, write_json
from torch_vit.parity import BOUNDS, FLOORS, model_rows, part_rows, to_torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "parity_tests"))
from test_parity_torch import _scale_weights  # noqa: E402  (the suite's own saturation knob)


def draw(rng, min_channels):
    while True:
        hc, heads = int(rng.choice([1, 2, 4, 8])), int(rng.integers(1, 4))
        if hc * heads >= min_channels:
            break
    return dict(hc=hc, C=hc * heads, B=int(rng.integers(1, 4)), H=int(rng.integers(1, 6)),
                W=int(rng.integers(1, 6)), p=int(rng.integers(1, 4)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    try:
        check_new_file(args.out, args.overwrite)  # before anything is measured
    except ValueError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    rng = np.random.default_rng(args.seed)
    stats = {}
    for i in range(args.draws):
        for dtype in (np.float64, np.float32):
            for regime, scale, large in (("unit", float(rng.choice([0.1, 1.0, 3.0])), 1.0),
                                         ("saturated", float(rng.choice([1.0, 100.0])), 4.0)):
                for what in ("vit", "attention"):
                    c = draw(rng, 4 if what == "vit" else 1)
                    seed = int(rng.integers(2**32))
                    if what == "vit":
                        size = (c["H"] * c["p"], c["W"] * c["p"])
                        m = nv.ViT(size, c["p"], 3, c["C"], int(rng.integers(1, 3)), c["hc"], 5, dtype=dtype, rng=seed)
                        _scale_weights(m, large)
                        t = to_torch(m, tv.ViT(size, c["p"], 3, c["C"], len(m.transformer.layers), c["hc"], 5))
                        x = (rng.standard_normal((c["B"], 3) + size) * scale).astype(dtype)
                        rows = model_rows(m, t, x, rng.integers(0, 5, c["B"]), float(rng.choice([0.0, 0.1])))
                    else:
                        a = nv.MhSelfAttention(c["C"], c["C"], c["hc"], dtype=dtype, rng=seed)
                        _scale_weights(a, large)
                        t = to_torch(a, tv.MhSelfAttention(c["C"], c["C"], c["hc"]))
                        x = (rng.standard_normal((c["B"], c["C"], c["H"], c["W"])) * scale).astype(dtype)
                        dout = rng.standard_normal(a.forward(x).shape).astype(dtype)
                        rows = part_rows(a, t, x, dout)
                    key = f"{np.dtype(dtype).name} {what} {regime}"
                    s = stats.setdefault(key, dict(tensors=0, failed=0, by_floor=0, worst_rel=0.0,
                                                   worst_rel_of_G=0.0, worst_row=""))
                    big = max(r.scale for r in rows[1:]) or 1.0
                    for r in rows:
                        s["tensors"] += 1
                        s["failed"] += not r.ok
                        if r.max_rel <= r.bound:
                            if r.max_rel > s["worst_rel"]:
                                s["worst_rel"], s["worst_row"] = r.max_rel, r.message()
                        elif r.ok:
                            s["by_floor"] += 1
                        s["worst_rel_of_G"] = max(s["worst_rel_of_G"], r.max_abs / big)
    machine = dict(python=platform.python_version(), numpy=np.__version__, torch=torch.__version__,
                   cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    print(f"{args.draws} draws per row; bounds {dict((k.name, v) for k, v in BOUNDS.items())}, "
          f"floors {dict((k.name, v) for k, v in FLOORS.items())}; {machine}")
    print(f"{'dtype / part / regime':<32} {'tensors':>8} {'failed':>7} {'by floor':>9} {'worst rel':>10} {'worst err/G':>12}")
    for key, s in stats.items():
        print(f"{key:<32} {s['tensors']:>8} {s['failed']:>7} {s['by_floor']:>9} {s['worst_rel']:>10.2e} "
              f"{s['worst_rel_of_G']:>12.2e}")
    if args.out:
        write_json(args.out, dict(draws=args.draws, seed=args.seed, machine=machine, stats=stats))
    return int(any(s["failed"] for s in stats.values()))


if __name__ == "__main__":
    sys.exit(main())
