"""Render every table of measured figures in README.md and docs/*.md from the files in benchmarks/results/.

    python benchmarks/render_docs.py            # rewrite the marked blocks in place
    python benchmarks/render_docs.py --check    # exit 1 naming the first block that differs

A block is the text between `<!-- render: NAME -->` and `<!-- /render -->` on lines of their own; NAME is a key
of RENDERERS below. A figure is typed once, in a results file, and reaches the docs only through here.
The results: `runs/<name>/run.json` (one per training run the docs cite: command, seed, threads, machine,
final accuracies, wall time; `source` says whether it was written by the run or transcribed), and the JSON of
the benchmarks (numpy_vs_torch, train_throughput, profile_step, profile_numpy, parity_errors, float32_error,
trajectory_drift, flip_tta, suite_time, ...), each written by the command that its doc page shows.
"""

import argparse
import json
import os
import pathlib
import re
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^<!-- render: (?P<name>[\w-]+) -->\n(?P<body>.*?)^<!-- /render -->$", re.S | re.M)


class Results:
    """The files under benchmarks/results/, read on first use."""

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        self._cache = {}

    def json(self, name):
        if name not in self._cache:
            path = self.folder / name
            try:
                self._cache[name] = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise SystemExit(f"render_docs: expected a JSON file {path}, got {type(e).__name__}: {e}")
        return self._cache[name]

    def runs(self):
        names = sorted(p.name for p in (self.folder / "runs").iterdir() if (p / "run.json").is_file())
        return [self.json(f"runs/{n}/run.json") for n in names]

    def run(self, name):
        return self.json(f"runs/{name}/run.json")


# ---------------------------------------------------------------------------------------------- formatting

def sci(x):
    """2 significant digits in scientific form, without the exponent's leading zero: 6.4e-11, 1.7e-4."""
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def bound_text(x):
    """A bound of one digit: 1e-10, 1e-3."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def pct(x):
    return "" if x is None else f"{x:.2f}%"


def duration(s):
    if s is None:
        return ""
    m, s = divmod(round(s), 60)
    return f"{m} min {s} s" if m else f"{s} s"


def wall_time(run):
    """'24 min 45 s (the whole command, ...)', or the note alone where no time was reported."""
    note = run.get("wall_note")
    if run.get("wall_s") is None:
        return note or ""
    return duration(run["wall_s"]) + (f" ({note})" if note else "")


def table(header, rows, align=None):
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio_table(rows, key):
    """NumPy / torch times of numpy_vs_torch.py: one row per part and dtype, one column per batch."""
    batches = sorted({r["batch"] for r in rows})
    body = []
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        for part in dict.fromkeys(r["part"] for r in rows):
            cells = {r["batch"]: r for r in rows if r["part"] == part and r["dtype"] == dtype}
            body.append([part, dtype] + [
                f"{1e3 * cells[b]['numpy_' + key + '_s']:.1f} / {1e3 * cells[b]['torch_' + key + '_s']:.1f} ms "
                f"= **{cells[b]['ratio_' + key]:.2f}**" if b in cells else "" for b in batches])
    return table(["part", "dtype"] + [f"B={b}" for b in batches], body, ["---", "---"] + ["---:"] * len(batches))


def spread(values):
    """mean, standard deviation (n - 1), min, max."""
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return statistics.mean(values), sd, min(values), max(values)


def recipe_runs(results, recipe):
    """The runs of one recipe (run.json's `recipe`), its seeds and thread counts."""
    return [r for r in results.runs() if r.get("recipe") == recipe]


# ---------------------------------------------------------------------------------------------- the blocks

def bounds():
    """The parity and trajectory bounds, by dtype name, as the code holds them."""
    import numpy as np
    from torch_vit.parity import BOUNDS, FLOORS
    from torch_vit.trajectory import TRAJECTORY_BOUNDS
    return {np.dtype(d).name: dict(bound=BOUNDS[np.dtype(d)], floor=FLOORS[np.dtype(d)],
                                   trajectory=TRAJECTORY_BOUNDS[np.dtype(d)]) for d in (np.float64, np.float32)}


def render_summary(results):
    """README: one row per headline result, each linking to its page."""
    bound = bounds()
    stats = results.json("parity_errors.json")["stats"]
    rows = []
    for dtype in ("float64", "float32"):
        worst = max((s for k, s in stats.items() if k.startswith(dtype)), key=lambda s: s["worst_rel"])
        tensors = sum(s["tensors"] for k, s in stats.items() if k.startswith(dtype))
        failed = sum(s["failed"] for k, s in stats.items() if k.startswith(dtype))
        rows.append([f"every gradient, NumPy against torch autograd, {dtype}",
                     f"bound {bound_text(bound[dtype]['bound'])} on max_rel; worst {sci(worst['worst_rel'])} over {tensors:,} tensors "
                     f"of {results.json('parity_errors.json')['draws']} random draws, {failed} failed",
                     "[parity](docs/parity.md)"])
    seed_reported = results.json("seed_reported.json")
    for recipe, label in (("seed", "seed recipe, 25 epochs"), ("default", "default recipe, 24 epochs (Muon)")):
        accs = [r["test_acc"] for r in recipe_runs(results, recipe)]
        mean, sd, lo, hi = spread(accs)
        extra = ""
        if recipe == "seed":
            extra = "; the seed reported " + " and ".join(pct(a) for a in seed_reported["test_acc"])
        rows.append([f"CIFAR-10 (JPEG q75 copy) test accuracy, {label}",
                     f"mean {pct(mean)} over {len(accs)} runs ({pct(lo)} to {pct(hi)}){extra}",
                     "[experiments](docs/experiments.md)"])
    parts = results.json("numpy_vs_torch.json")["parts"]
    row = next(p for p in parts if p["part"] == "model+loss" and p["dtype"] == "float32" and p["batch"] == 128)
    rows.append(["NumPy / torch time, forward+backward of the model, float32, batch 128",
                 f"**{row['ratio_fwdbwd']:.2f}** ({1e3 * row['numpy_fwdbwd_s']:.0f} / {1e3 * row['torch_fwdbwd_s']:.0f} ms)",
                 "[benchmarks](docs/benchmarks.md)"])
    seed, default = results.json("train_throughput.json"), results.json("train_throughput_default.json")
    for name, label in (("step", "float32"), ("step_amp", "`--amp` (bfloat16)")):
        if name in seed["results"] and name in default["results"]:
            rows.append([f"training step, {label}, over the plain seed model's, in one run (2-core CPU)",
                         f"**{seed['results'][name]['ratio']:.2f}x** (seed recipe, batch {seed['batch']}); "
                         f"**{default['results'][name]['ratio']:.2f}x** (default, batch {default['batch']})",
                         "[benchmarks](docs/benchmarks.md#training-speed)"])
    suite = results.json("suite_time.json")
    for s in suite["runs"]:
        rows.append([f"`{s['command']}`", f"{s['summary']}; {s['wall_s']:.0f} s wall", "[parity](docs/parity.md)"])
    return table(["result", "figure", "more"], rows)


def render_parity_bounds(results):
    rows = [[d, bound_text(b["bound"]), bound_text(b["floor"]), bound_text(b["trajectory"])] for d, b in bounds().items()]
    return table(["dtype", "bound on max_rel", "floor, as a fraction of the largest gradient G of the same backward",
                  "bound over `convvit check --steps N`"], rows)


def render_suite_time(results):
    suite = results.json("suite_time.json")
    m = suite["machine"]
    rows = [[f"`{s['command']}`", s["summary"], f"{s['wall_s']:.0f} s"] for s in suite["runs"]]
    return (table(["command", "pytest's summary", "wall time"], rows, ["---", "---", "---:"]) +
            f"\n\nMeasured by `python benchmarks/suite_time.py --out benchmarks/results/suite_time.json --overwrite`, alone on "
            f"{m['cpu']} ({m['cores']} cores), Python {m['python']}, torch {m['torch']}, NumPy {m['numpy']}.")


def render_training_results(results):
    names = ("seed", "default", "default-adamw", "muon-s4")
    rows = []
    for n in names:
        r = results.run(n)
        rows.append([f"[{n}](experiments.md)", f"`{r['command']}`", pct(r["test_acc"]), pct(r.get("train_acc")), wall_time(r)])
    return table(["run", "command", "test", "train", "wall time"], rows, ["---", "---", "---:", "---:", "---"])


def render_experiments_summary(results):
    rows = []
    for recipe, label in (("seed", "`--recipe seed` (the seed's run), 25 epochs"),
                          ("default", "`--recipe default` (Muon), 24 epochs"),
                          ("default-adamw", "`--recipe default --optimizer adamw`, 24 epochs")):
        runs = recipe_runs(results, recipe)
        test = [r["test_acc"] for r in runs]
        mean, sd, lo, hi = spread(test)
        above70 = sum(a >= 70 for a in test)
        rows.append([label, len(runs), pct(mean), f"{sd:.2f}", pct(lo), pct(hi), f"{above70} of {len(runs)}",
                     pct(statistics.mean(r["train_acc"] for r in runs))])
    seed = results.json("seed_reported.json")
    rows.append(["the seed's own runs (original CIFAR-10, GPU; " + seed["source"] + ")", len(seed["test_acc"]),
                 pct(statistics.mean(seed["test_acc"])), "", pct(min(seed["test_acc"])), pct(max(seed["test_acc"])),
                 "", ""])
    return table(["recipe", "runs", "test mean", "sd", "min", "max", "70% reached", "train mean"], rows,
                 ["---"] + ["---:"] * 7)


GROUP_ORDER = ("seed recipe", "default recipe (Muon)", "default recipe, one Muon", "AdamW default", "AdamW recipe",
               "GPU sweep", "NumPy")  # the order of experiments.md's tables, by the start of run.json's `group`


def render_experiments(results):
    groups = {}
    for r in results.runs():
        groups.setdefault(r["group"], []).append(r)
    order = lambda g: (next((i for i, key in enumerate(GROUP_ORDER) if g.startswith(key)), len(GROUP_ORDER)), g)
    out = []
    for group, runs in sorted(groups.items(), key=lambda item: order(item[0])):
        runs.sort(key=lambda r: (r["name"] not in ("seed", "default", "default-adamw"), r["name"]))
        rows = []
        for r in runs:
            epochs = str(r["epochs"]) if r["epochs_run"] == r["epochs"] else f"{r['epochs_run']} of {r['epochs']}"
            test = pct(r.get("test_acc")) + (f" (EMA {pct(r['ema_test_acc'])})" if "ema_test_acc" in r else "")
            notes = "; ".join(x for x in (wall_time(r), r.get("note", "")) if x)
            machine = r["machine"].split(",")[0].replace("2-core CPU (AMD EPYC)", "CPU").replace("one ", "")
            rows.append([r["name"], f"`{r['flags']}`" if r["flags"] else "(none)", r["seed"], r["threads"], machine,
                         epochs, test, pct(r.get("train_acc")), notes])
        out.append(f"**{group}**\n\n" + table(
            ["run", "flags", "seed", "threads", "machine", "epochs", "test", "train", "wall time; notes"], rows,
            ["---", "---", "---:", "---:", "---", "---:", "---:", "---:", "---"]))
    return "\n\n".join(out)


def render_flip_tta(results):
    rows = []
    for ckpt, r in results.json("flip_tta.json").items():
        rows.append([f"`{ckpt}`", pct(100 * r["plain"]), pct(100 * r["mirror"]), pct(100 * r["mean_logits"]),
                     pct(100 * r["mean_probabilities"]), f"{r['test_images']:,}"])
    return table(["checkpoint", "plain", "mirror image", "mean of logits", "mean of probabilities", "test images"],
                 rows, ["---"] + ["---:"] * 5)


def render_parity_errors(results):
    res = results.json("parity_errors.json")
    rows = []
    for key, s in res["stats"].items():
        dtype, part, regime = key.split()
        part = {"vit": "ViT + loss", "attention": "attention"}[part]
        rows.append([f"{dtype} {part}, {'unit scale' if regime == 'unit' else regime}", f"{s['tensors']:,}",
                     s["failed"], s["by_floor"], sci(s["worst_rel"]), sci(s["worst_rel_of_G"])])
    m = res["machine"]
    return (table(["dtype, part, regime", "tensors", "failed", "passed by the floor", "worst max_rel",
                   "worst max_abs / G"], rows, ["---"] + ["---:"] * 5) +
            f"\n\n{res['draws']} random draws per row, seed {res['seed']}; Python {m['python']}, NumPy {m['numpy']}, "
            f"torch {m['torch']}, {m['threads']} threads.")


def render_float32_error(results):
    rows = []
    for ckpt, r in results.json("float32_error.json").items():
        rows.append([f"`{ckpt}`"] + [f"{sci(r[k][0])} ({r[k][1]})" for k in
                                     ("numpy32_vs_float64", "torch32_vs_float64", "numpy32_vs_torch32")])
    return table(["checkpoint", "NumPy float32 vs float64", "torch float32 vs float64", "NumPy vs torch, float32"],
                 rows)


def render_trajectory_drift(results):
    res = results.json("trajectory_drift.json")
    steps = list(res["results"][0]["worst_after_step"])
    rows = [[r["schedule"], r["dtype"]] + [sci(r["worst_after_step"][s]) for s in steps] +
            [bound_text(r["bound"]), "held" if not r["first_failure"] else "exceeded", f"{r['seconds']:.1f} s"]
            for r in res["results"]]
    return table(["schedule", "dtype"] + [f"after step {s}" for s in steps] + ["bound", "", "time"], rows,
                 ["---", "---"] + ["---:"] * len(steps) + ["---:", "---", "---:"])


def render_numpy_vs_torch(key):
    def render(results):
        res = results.json("numpy_vs_torch.json")
        m = res["machine"]
        return (ratio_table(res["parts"], key) + f"\n\n{m['cpu']}, {m['cores']} cores, {m['threads']} threads; "
                f"Python {m['python']}, NumPy {m['numpy']} ({m['blas']}), torch {m['torch']}.")
    return render


def render_goals(results):
    res = results.json("numpy_vs_torch.json")
    row = next(p for p in res["parts"] if p["part"] == "model+loss" and p["dtype"] == "float32" and p["batch"] == 128)
    mem = res["memory"]
    cl = row["numpy_fwdbwd_s"] / row["torch_channels_last_fwdbwd_s"] if "torch_channels_last_fwdbwd_s" in row else None
    rows = [["NumPy forward+backward of the model, float32, batch 128, over torch's (NCHW)", "at most 1.5",
             f"{row['ratio_fwdbwd']:.2f}", "met" if row["ratio_fwdbwd"] <= 1.5 else "not met"],
            ["the same over torch in channels_last memory", "(no goal)", f"{cl:.2f}" if cl else "", ""],
            ["peak memory of a NumPy forward+backward over torch's, float32, batch 128", "at most 2",
             f"{mem['ratio']:.2f} ({mem['numpy']['peak_growth_kib'] / 1024:.0f} / "
             f"{mem['torch']['peak_growth_kib'] / 1024:.0f} MiB)", "met" if mem["ratio"] <= 2 else "not met"],
            ]
    for file in ("train_throughput.json", "train_throughput_default.json"):
        speed = results.json(file)
        for name, label in (("step", "float32"), ("step_amp", "--amp")):
            if name in speed["results"]:
                ratio = speed["results"][name]["ratio"]
                rows.append([f"training step over the plain seed model's, {label}, `--recipe {speed['recipe']}`, batch "
                             f"{speed['batch']}", "at least 2.0", f"{ratio:.2f}", "met" if ratio >= 2.0 else "not met"])
    whole = results.json("run_overhead.json")
    rows.append([f"a whole run over its training loop (`{whole['command']}`)", "at most 1.15",
                 f"{whole['wall_over_train_loop']:.3f}", "met" if whole["wall_over_train_loop"] <= 1.15 else "not met"])
    goal = "the default recipe's 24 epochs on one H200 (`benchmarks/gpu_train.py`), end to end"
    if (results.folder / "gpu_train.json").exists():
        gpu = results.json("gpu_train.json")
        lowest = min(r["test_acc"] for r in recipe_runs(results, "default"))  # the README's range of CPU runs
        same = gpu["test_acc"] >= lowest
        rows.append([f"{goal}, on {gpu['machine']['gpu']}, at the CPU runs' accuracy (at least {pct(lowest)})",
                     "at most 60 s", f"{gpu['wall_s']:.1f} s, {gpu['test_acc']:.2f}%",
                     "met" if gpu["goal"]["met"] and same else "not met"])
    else:
        rows.append([goal, "at most 60 s", "not measured: no session has had a GPU yet", ""])
    return table(["goal", "target", "measured", ""], rows, ["---", "---", "---:", "---"])


SPEED_ROWS = [("seed_step", "the plain seed model's step, the recipe's optimiser (the reference)"),
              ("seed_step_adamw", "the plain seed model's step, AdamW (the reference of the AdamW rows)"),
              ("step", "convvit train's step, float32"), ("step_amp", "the same with `--amp` (bfloat16 autocast)"),
              ("step_torch_muon", "the float32 step with `torch.optim.Muon` instead of `BatchedMuon`"),
              ("step_amp_torch_muon", "the `--amp` step with `torch.optim.Muon` instead of `BatchedMuon`"),
              ("step_adamw", "the float32 step with AdamW for every weight"),
              ("step_amp_adamw", "the `--amp` step with AdamW for every weight"), ("step_numpy", "the NumPy backend's step"),
              ("augment", "the batch's augmentation alone"), ("seed_eval", "the plain seed model's evaluation (the reference)"),
              ("eval", "evaluation, float32"), ("eval_amp", "evaluation, `--amp`")]


def render_train_speed(results):
    res = [results.json(f) for f in ("train_throughput.json", "train_throughput_default.json")]
    header = ["over the plain seed model (images/s)"] + [
        f"`--recipe {r['recipe']}` ({r['optimizer']}), batch {r['batch']}" for r in res]
    rows = []
    for key, label in SPEED_ROWS:
        cells = [f"**{r['results'][key]['ratio']:.2f}x** ({r['results'][key]['img_s']:,.0f})" if key in r["results"]
                 else "" for r in res]
        if any(cells):
            rows.append([label] + cells)
    m = res[0]["machine"]
    return (table(header, rows, ["---"] + ["---:"] * len(res)) +
            f"\n\nMedian over {res[0]['rounds']} rounds of the per-round ratio; images per second at the median time. "
            f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads, torch {m['torch']}, {m['device']}.")


def render_train_candidates(results):
    res = results.json("train_candidates.json")
    r, compile_s = res["results"], res.get("compile_s", {})
    rows = []
    for name, base, label in (("step_compile", "step", "`torch.compile` of the model, float32"),
                              ("step_amp_compile", "step_amp", "`torch.compile` of the model, `--amp`"),
                              ("step_amp_foreach", "step_amp", "AdamW with `foreach=True`, `--amp`"),
                              ("step_kqv", "step", "k, q and v as one convolution, float32"),
                              ("step_amp_kqv", "step_amp", "k, q and v as one convolution, `--amp`"),
                              ("step_split_heads", "step", "each head's products on its own channels, float32"),
                              ("step_amp_split_heads", "step_amp", "each head's products on its own channels, `--amp`"),
                              ("step_linear", "step", "1x1 convolutions as `F.linear` on the (B, H, W, C) view, float32"),
                              ("step_amp_linear", "step_amp", "1x1 convolutions as `F.linear`, `--amp`"),
                              ("step_q_grad", "step", "q's gradient made channels-last, float32"),
                              ("step_amp_q_grad", "step_amp", "q's gradient made channels-last, `--amp`"),
                              ("step_amp_norm_bf16", "step_amp",
                               "the attention's normalized input cast to bfloat16 once, `--amp`"),
                              ("step_one_thread", "step_amp" if "step_amp" in r else "step",
                               f"one thread instead of {res['machine']['threads']}, `--amp`")):
        if name in r:
            rows.append([label, f"{r[name]['ratio']:.2f}x", f"{r[base]['ratio']:.2f}x",
                         f"{compile_s[name]:.0f} s" if name in compile_s else ""])
    m = res["machine"]
    return (table(["candidate", "step over the plain seed model's", "the same step without it", "compile time"], rows,
                  ["---", "---:", "---:", "---:"]) +
            f"\n\n`--recipe {res['recipe']}` ({res['optimizer']}), batch {res['batch']}, {res['rounds']} rounds; "
            f"{m['cpu']}, {m['cores']} cores, {m['threads']} threads, torch {m['torch']}.")


def render_profile_step(results):
    prof = results.json("profile_step.json")
    names = list(prof["profiles"])
    ops = list(dict.fromkeys(o["op"] for p in prof["profiles"].values() for o in p["ops"]))
    cells = {name: {o["op"]: o for o in p["ops"]} for name, p in prof["profiles"].items()}
    rows = [[f"`{op}`"] + [f"{100 * cells[n][op]['share']:.0f}% ({cells[n][op]['ms_per_step']:.1f} ms)" if op in cells[n]
                           else "" for n in names] for op in ops]
    rows.append(["the step, profiled"] + [f"{prof['profiles'][n]['ms_per_step']:.0f} ms" for n in names])
    m = prof["machine"]
    return (table(["op (self CPU time)"] + names, rows, ["---"] + ["---:"] * len(names)) +
            f"\n\n`--recipe {prof['recipe']}` ({prof['optimizer']}), batch {prof['batch']}, {prof['steps']} steps under "
            f"torch.profiler (which slows them); {m['cpu']}, {m['cores']} cores, {m['threads']} threads, torch {m['torch']}.")


def render_profile_numpy(results):
    prof = results.json("profile_numpy.json")
    rows = [[p["part"], f"{100 * p['share']:.1f}%", f"{p['ms_per_step']:.1f} ms"] for p in prof["parts"]]
    rows.append(["the step (forward, loss, backward)", "100%", f"{prof['ms_per_step']:.0f} ms"])
    m = prof["machine"]
    return (table(["part (own time)", "share", "per step"], rows, ["---", "---:", "---:"]) +
            f"\n\nThe seed model, {prof['dtype']}, batch {prof['batch']}, {prof['steps']} steps; {m['cpu']}, {m['cores']} "
            f"cores, {m['threads']} BLAS threads, NumPy {m['numpy']}.")


def render_run_overhead(results):
    run = results.json("run_overhead.json")
    parts = [("train_loop", "the training loop (augmentation and steps)"), ("evaluation", "evaluation every epoch"),
             ("numpy_check", "the final report's NumPy check of every test image"),
             ("rest", "the rest: start-up, loading the data, checkpoints, pictures")]
    rows = [[label, f"{run[k + '_s']:,.0f} s", f"{100 * run[k + '_share']:.1f}%"] for k, label in parts]
    rows.append(["the whole command", f"{run['wall_s']:,.0f} s", f"{run['wall_over_train_loop']:.3f}x the training loop"])
    return (table(["part of the run", "time", "share"], rows, ["---", "---:", "---:"]) +
            f"\n\n`{run['command']}`: {run['epochs']} epochs, {run['test_acc']:.2f}% test accuracy; {run['machine']}, "
            f"{run['threads']} threads.")


RENDERERS = {
    "summary": render_summary,
    "parity-bounds": render_parity_bounds,
    "suite-time": render_suite_time,
    "training-results": render_training_results,
    "experiments-summary": render_experiments_summary,
    "experiments": render_experiments,
    "flip-tta": render_flip_tta,
    "parity-errors": render_parity_errors,
    "float32-error": render_float32_error,
    "trajectory-drift": render_trajectory_drift,
    "numpy-vs-torch-fwdbwd": render_numpy_vs_torch("fwdbwd"),
    "numpy-vs-torch-fwd": render_numpy_vs_torch("fwd"),
    "benchmark-goals": render_goals,
    "train-speed": render_train_speed,
    "profile-step": render_profile_step,
    "profile-numpy": render_profile_numpy,
    "train-candidates": render_train_candidates,
    "run-overhead": render_run_overhead,
}


def doc_files(root):
    root = pathlib.Path(root)
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


def render_file(text, results, where):
    """The file's text with every block rendered again; raises SystemExit on an unknown block."""
    def sub(m):
        name = m["name"]
        if name not in RENDERERS:
            raise SystemExit(f"render_docs: {where}: expected a block among {', '.join(RENDERERS)}, got '{name}'")
        return f"<!-- render: {name} -->\n{RENDERERS[name](results).rstrip()}\n<!-- /render -->"
    return BLOCK.sub(sub, text)


def first_difference(old, new):
    """The name of the first block whose body differs between two renderings of a file."""
    for a, b in zip(BLOCK.finditer(old), BLOCK.finditer(new)):
        if a["body"] != b["body"]:
            return a["name"]
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs")
    ap.add_argument("--root", default=str(ROOT), help="the project's root (default: this checkout)")
    ap.add_argument("--results", default=None, help="the results folder (default: ROOT/benchmarks/results)")
    args = ap.parse_args(argv)
    results = Results(args.results or pathlib.Path(args.root) / "benchmarks" / "results")
    changed = 0
    for path in doc_files(args.root):
        old = path.read_text()
        rel = os.path.relpath(path, args.root)
        new = render_file(old, results, rel)
        if new == old:
            continue
        if args.check:
            print(f"render_docs: {rel}: table '{first_difference(old, new)}' differs from what "
                  f"benchmarks/results/ renders; run python benchmarks/render_docs.py", file=sys.stderr)
            return 1
        from numpy_vit.io import atomic_write
        atomic_write(path, lambda f: f.write(new), binary=False)
        print(f"rendered {rel}")
        changed += 1
    if not args.check and not changed:
        print("every table is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
