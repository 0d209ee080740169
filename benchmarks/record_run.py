"""Keep a finished training run's record under benchmarks/results/runs/<name>/, for the docs to cite:
its config.json, metrics.jsonl and report.json, and a run.json with the command, seed, threads, machine and
final figures (read from those files, never typed).

    python benchmarks/record_run.py runs/default --name default-2026-12 --group "default recipe (Muon)" \\
        --recipe default --command "convvit train --data imagefolder:../cifar10-jpeg --out runs/default"

Then `python benchmarks/render_docs.py` puts it into docs/experiments.md (and, with --recipe, into the recipe's
statistics).
"""

import argparse
import json
import os
import pathlib
import platform
import shlex
import shutil
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from numpy_vit.io import write_json  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "runs"
FILES = ("config.json", "metrics.jsonl", "report.json")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def flags_of(command):
    """The command's training flags: what follows `train`, less --data, --out, --cache-dir and --no-progress."""
    words = shlex.split(command)
    if "train" not in words:
        return command
    words = words[words.index("train") + 1:]
    keep, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w in ("--data", "--out", "--cache-dir", "--data-dir"):
            skip = True
        elif w != "--no-progress" and not w.startswith(("--data=", "--out=", "--cache-dir=", "--data-dir=")):
            keep.append(w)
    return " ".join(keep)


def record(run_dir, name, group, command, recipe=None, machine=None, wall_s=None, wall_note=None, note=None,
           results=RESULTS, overwrite=False):
    run_dir, out = pathlib.Path(run_dir), pathlib.Path(results) / name
    missing = [f for f in FILES if not (run_dir / f).is_file()]
    if missing:
        raise SystemExit(f"record_run: expected a finished run in {run_dir}, got no {', '.join(missing)}")
    if (out / "run.json").exists() and not overwrite:
        raise SystemExit(f"record_run: expected a new name, got '{name}', which {out} already records "
                         f"(--overwrite to replace it)")
    config = json.loads((run_dir / "config.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        raise SystemExit(f"record_run: expected at least one epoch in {run_dir / 'metrics.jsonl'}, got none")
    report = json.loads((run_dir / "report.json").read_text())
    last = rows[-1]
    if machine is None:
        where = config.get("device", "cpu")
        machine = (f"{os.cpu_count()}-core CPU ({cpu_name()})" if where == "cpu" else where) + \
            f", torch {config.get('torch', '?').split('+')[0]}"
    run = dict(name=name, group=group, recipe=recipe, command=command, flags=flags_of(command),
               seed=config["seed"], threads=config.get("threads"), machine=machine, data=config.get("data"),
               epochs=config["epochs"], epochs_run=len(rows), test_acc=round(100 * report["test_acc"], 2),
               train_acc=round(100 * last["train_acc"], 2),
               ema_test_acc=round(100 * last["ema_test_acc"], 2) if "ema_test_acc" in last else None,
               wall_s=round(wall_s if wall_s is not None else sum(r["time"] for r in rows)),
               wall_note=wall_note if wall_s is not None else "the epochs' own times summed: no start-up, no final report",
               note=note, source=f"written by benchmarks/record_run.py from {run_dir}")
    out.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        shutil.copyfile(run_dir / f, out / f)
    write_json(out / "run.json", {k: v for k, v in run.items() if v is not None})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="the run's --out folder")
    ap.add_argument("--name", required=True, help="the record's folder name under benchmarks/results/runs/")
    ap.add_argument("--group", required=True, help="the table of docs/experiments.md it belongs to")
    ap.add_argument("--command", required=True, help="the exact command that made the run")
    ap.add_argument("--recipe", help="seed | default | default-adamw: counts in that recipe's statistics")
    ap.add_argument("--machine", help="default: this machine's CPU and the run's torch")
    ap.add_argument("--wall-s", type=float, help="the whole command's wall time (default: the epochs' times summed)")
    ap.add_argument("--wall-note", help="what --wall-s covers and what shared the machine")
    ap.add_argument("--note")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        out = record(args.run_dir, args.name, args.group, args.command, recipe=args.recipe, machine=args.machine,
                     wall_s=args.wall_s, wall_note=args.wall_note, note=args.note, overwrite=args.overwrite)
    except SystemExit as e:  # record()'s one-line refusals: bad input, exit 2 as everywhere else, nothing written
        if not isinstance(e.code, str):
            raise
        print(e.code, file=sys.stderr)
        return 2
    print(f"recorded {args.run_dir} in {out}")


if __name__ == "__main__":
    sys.exit(main())
