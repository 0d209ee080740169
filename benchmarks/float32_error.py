"""Who is closer: NumPy's float32 gradients or torch's, each measured against the float64 gradients of
the same weights and batch (computed by NumPy in float64, which agrees with torch's float64 to
about 1e-14). The measurement behind the float32 parity bound in docs/parity.md.

For each checkpoint, `convvit check`'s batches (seeds 0 to 3, batches 2 and 8, N(0, 1) images), every
parameter gradient that is not in the floor regime (largest entry at least 1e-5 of the largest
gradient G): the worst relative error of NumPy float32, of torch float32, and between the two.

    python benchmarks/float32_error.py runs/default/checkpoint.pt runs/seed/checkpoint.pt ...
"""

import argparse

import numpy as np
import torch

import numpy_vit as nv
from numpy_vit.io import check_new_file, write_json
from torch_vit.checkpoint import load_checkpoint, numpy_twin


def worst_errors(path, seeds=range(4), batches=(2, 8)):
    model, _ = load_checkpoint(path)
    model.eval()
    cfg = model.config
    h, w = cfg["image_size"]
    worst = {k: (0.0, "") for k in ("numpy32_vs_float64", "torch32_vs_float64", "numpy32_vs_torch32")}
    for seed in seeds:
        for batch in batches:
            rng = np.random.default_rng(seed)  # the draw convvit check makes
            x = rng.standard_normal((batch, cfg["in_channels"], h, w))
            y = rng.integers(0, cfg["num_classes"], batch)

            def numpy_grads(dtype):
                m = numpy_twin(model, dtype)
                _, dlogits = nv.cross_entropy(m.forward(x.astype(dtype)), y, 0.0)
                m.backward(dlogits)
                return m.grads

            g64, g32 = numpy_grads(np.float64), numpy_grads(np.float32)
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x.astype(np.float32))),
                                              torch.from_numpy(y)).backward()
            big = max(np.abs(g).max() for g in g64.values())
            for name, p in model.named_parameters():
                ref, t32 = g64[name], p.grad.numpy()
                scale = np.abs(ref).max()
                if scale < 1e-5 * big:
                    continue  # the floor regime: compared against G, not against itself
                errors = {"numpy32_vs_float64": np.abs(g32[name] - ref).max() / scale,
                          "torch32_vs_float64": np.abs(t32 - ref).max() / scale,
                          "numpy32_vs_torch32": np.abs(g32[name] - t32).max() / np.abs(t32).max()}
                for k, e in errors.items():
                    if e > worst[k][0]:
                        worst[k] = (float(e), f"{name}, --seed {seed} --batch {batch}")
    return worst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--out", default=None)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    try:
        check_new_file(args.out, args.overwrite)  # before anything is measured
    except ValueError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    results = {}
    for path in args.checkpoints:
        results[path] = worst_errors(path)
        print(path)
        for k, (e, where) in results[path].items():
            print(f"  {k:<20} {e:.1e}  ({where})")
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
