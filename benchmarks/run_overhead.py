"""A whole `convvit train` run against its training loop: runs the command, times it from start to end, and
splits the wall time with the run's own records into the training loop (augmentation and steps, every epoch:
metrics.jsonl's train_s), evaluation every epoch (time - train_s), checkpoints and the rest of each epoch, the
final report's NumPy check of every test image (report.json's numpy_check_seconds), and what is left
(start-up, loading the data, the pictures). The goal: wall time at most 1.15x the training loop's.

    python benchmarks/run_overhead.py --out benchmarks/results/run_overhead.json -- \\
        convvit train --data imagefolder:../cifar10-jpeg --amp --no-progress --out runs/amp-s1
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from numpy_vit.io import check_new_file, write_json  # noqa: E402
from record_run import cpu_name  # noqa: E402


def run_folder(command):
    """The --out of a `convvit train` command line (its default, runs/latest, when not given)."""
    for i, arg in enumerate(command):
        if arg == "--out" and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    return "runs/latest"


def split(wall_s, metrics, report):
    """The shares of a run's wall time, from its metrics.jsonl rows and report.json."""
    train_s = sum(r["train_s"] for r in metrics)
    epochs_s = sum(r["time"] for r in metrics)
    numpy_s = report.get("numpy_check_seconds", 0.0)
    parts = dict(train_loop_s=train_s, evaluation_s=epochs_s - train_s, numpy_check_s=numpy_s,
                 rest_s=wall_s - epochs_s - numpy_s)
    return dict(wall_s=round(wall_s, 1), epochs=len(metrics), **{k: round(v, 1) for k, v in parts.items()},
                **{k.replace("_s", "_share"): round(v / wall_s, 4) for k, v in parts.items()},
                wall_over_train_loop=round(wall_s / train_s, 3))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="results JSON")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- convvit train ...")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command[:2] != ["convvit", "train"]:
        ap.exit(2, f"{ap.prog}: error: expected a command '-- convvit train ...', got {' '.join(command) or 'none'}\n")
    try:
        check_new_file(args.out, args.overwrite)
    except ValueError as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    started = time.perf_counter()
    code = subprocess.call(command)
    wall = time.perf_counter() - started
    if code:
        ap.exit(code, f"{ap.prog}: error: the command exited with status {code}\n")
    folder = run_folder(command)
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    with open(os.path.join(folder, "report.json")) as f:
        report = json.load(f)
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    import torch

    result = dict(command=" ".join(command), recipe=config["recipe"], amp=config["amp"], threads=config["threads"],
                  machine=f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}",
                  test_acc=round(100 * report["test_acc"], 2), **split(wall, metrics, report))
    print(json.dumps(result, indent=1))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
