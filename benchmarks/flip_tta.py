"""Test-time flip averaging on trained checkpoints: what the mirror image adds at evaluation.

For each checkpoint, the test accuracy on the images as they are (what `convvit train` and
`convvit evaluate` report), on their horizontal mirrors, and of the two predictions averaged (logits,
and softmax probabilities). docs/experiments.md reports it beside, never in place of, the plain accuracy.

    python benchmarks/flip_tta.py runs/default/checkpoint.pt runs/seed/checkpoint.pt \
        --out benchmarks/results/flip_tta.json  # --overwrite to replace an earlier one
"""

import argparse

import torch

from numpy_vit.io import check_new_file, write_json
from torch_vit.cli import load_for_inspection
from torch_vit.train import predict


def flip_accuracies(path, data_spec=None, cache_dir=None):
    model, cfg, data = load_for_inspection(path, data_spec, cache_dir=cache_dir, progress=False)
    device = torch.device("cpu")
    plain = predict(model, data.test_x, cfg, device)  # (N, K)
    mirror = predict(model, data.test_x.flip(-1), cfg, device)  # (N, K), the images flipped left-right

    def acc(logits):
        return (logits.argmax(1) == data.test_y).double().mean().item()

    return dict(plain=acc(plain), mirror=acc(mirror), mean_logits=acc(plain + mirror),
                mean_probabilities=acc(plain.softmax(1) + mirror.softmax(1)), test_images=len(data.test_y))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", default=None, help="a --data spec (default: each checkpoint's own)")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    try:
        check_new_file(args.out, args.overwrite)  # before anything is measured
    except ValueError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    results = {}
    for path in args.checkpoints:
        results[path] = r = flip_accuracies(path, args.data, args.cache_dir)
        print(f"{path}: plain {100 * r['plain']:.2f}%  mirrored {100 * r['mirror']:.2f}%  "
              f"averaged logits {100 * r['mean_logits']:.2f}%  averaged probabilities "
              f"{100 * r['mean_probabilities']:.2f}%  ({r['test_images']} test images)")
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
