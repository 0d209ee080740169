"""NumPy against torch on the CPU, side by side in one run: every part of the seed model, forward and
forward+backward, float32 and float64, batch 1, 32, 128 and 256 (median times and the ratio
NumPy / torch); the peak memory of one forward+backward of the whole model at batch 128; and the
machine.

    python benchmarks/numpy_vs_torch.py --out benchmarks/results/numpy_vs_torch.json --overwrite

Same threads on both sides: NumPy's BLAS and torch both run --threads threads (default: every
core); the environment variables that set BLAS threads are fixed before NumPy loads. "forward" is a
training forward on both sides (NumPy always keeps what its backward needs; torch records autograd),
"fwd+bwd" adds the backward to the input and every parameter. torch runs eagerly on NCHW tensors, as
the seed does; the whole model is also timed with torch in channels_last memory, the layout
``convvit train`` uses. Each measurement alternates NumPy and torch repeat by repeat, after a
warm-up, and keeps the median. Peak memory is measured in a fresh process per side: the peak of
the resident set (VmHWM, reset once the model and the batch exist) over two forward+backward steps,
less the resident set before them.
"""

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time

PARTS = ("embedding", "attention", "feed-forward", "pre-norm", "block", "model+loss")


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128, 256])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    ap.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement at least (default 0.5)")
    ap.add_argument("--min-repeats", type=int, default=5)
    ap.add_argument("--memory-batch", type=int, default=128)
    ap.add_argument("--out", default=None, help="JSON file to write (atomically)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    ap.add_argument("--memory-child", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    return ap.parse_args(argv)


ARGS = _args(sys.argv[1:] if __name__ == "__main__" else [])
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the thread settings)

import numpy_vit as nv  # noqa: E402
from numpy_vit.io import check_new_file, write_json  # noqa: E402
from record_run import cpu_name  # noqa: E402
from render_docs import ratio_table as table  # noqa: E402  (the docs' tables and this script's print the same)

SEED = nv.seed_config()

if ARGS.memory_child != "numpy":
    import torch  # noqa: E402
    import torch.nn.functional as F  # noqa: E402

    import torch_vit.model as tv  # noqa: E402
    from torch_vit.checkpoint import numpy_twin  # noqa: E402
    torch.set_num_threads(ARGS.threads)


def build(part, dtype):
    """(numpy part, torch part with the same weights, input shape) of one part at the seed's sizes."""
    C, hc, h = SEED["embedding_dim"], SEED["head_channels"], SEED["image_size"] // SEED["patch_size"]
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    if part == "model+loss":
        t = tv.ViT(**SEED).to(tdtype)
        return numpy_twin(t, dtype), t, (3, 32, 32)
    if part == "embedding":
        t = tv.Embedding(C, h * h, (h, h), 3, SEED["patch_size"])
        shape = (3, 32, 32)
    elif part == "attention":
        t = tv.MhSelfAttention(C, C, hc)
        shape = (C, h, h)
    elif part == "feed-forward":
        t = tv.FeedForward(C, C, 4)
        shape = (C, h, h)
    elif part == "pre-norm":
        t = ChannelNorm(C)
        shape = (C, h, h)
    else:  # one transformer block: both pre-norm residual branches
        t = tv.Transformer(1, hc, C, C)
        shape = (C, h, h)
    t = t.to(tdtype)
    n = {"embedding": lambda: nv.Embedding(C, h * h, (h, h), 3, SEED["patch_size"], dtype=dtype),
         "attention": lambda: nv.MhSelfAttention(C, C, hc, dtype=dtype),
         "feed-forward": lambda: nv.FeedForward(C, C, 4, dtype=dtype),
         "pre-norm": lambda: nv.LayerNorm(C, dtype=dtype),
         "block": lambda: nv.Transformer(1, hc, C, C, dtype=dtype)}[part]()
    n.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    return n, t, shape


if ARGS.memory_child != "numpy":
    class ChannelNorm(torch.nn.Module):
        """The pre-norm's LayerNorm over channels as torch_vit applies it, under the NumPy name."""

        def __init__(self, channels):
            super().__init__()
            self.norm = torch.nn.LayerNorm(channels)

        def forward(self, x):
            return tv.channels_layer_norm(self.norm, x)

        def state_dict(self, *a, **k):
            return {name.removeprefix("norm."): v for name, v in super().state_dict(*a, **k).items()}


def numpy_steps(n, x, y, dout):
    if y is not None:
        def fwd():
            return nv.cross_entropy(n.forward(x), y)

        def both():
            _, dlogits = nv.cross_entropy(n.forward(x), y)
            n.backward(dlogits)
    else:
        def fwd():
            return n.forward(x)

        def both():
            n.forward(x)
            n.backward(dout)
    return fwd, both


def torch_steps(t, x, y, dout, memory_format=None):
    params = list(t.parameters())
    xt = torch.from_numpy(x)
    if memory_format is not None:
        xt = xt.contiguous(memory_format=memory_format)
    xt.requires_grad_(True)
    dt = None if dout is None else torch.from_numpy(dout)
    yt = None if y is None else torch.from_numpy(y)

    def out():
        o = t(xt)
        return F.cross_entropy(o, yt) if yt is not None else o

    def fwd():
        return out()

    def both():
        for p in params:
            p.grad = None
        xt.grad = None
        o = out()
        o.backward() if yt is not None else o.backward(dt)
    return fwd, both


def side_by_side(fn_a, fn_b):
    """Median seconds of fn_a and fn_b, run alternately after one warm-up call each."""
    fn_a(), fn_b()
    ta, tb = [], []
    start = time.perf_counter()
    while len(ta) < ARGS.min_repeats or time.perf_counter() - start < ARGS.min_time:
        for fn, acc in ((fn_a, ta), (fn_b, tb)):
            s = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - s)
    return statistics.median(ta), statistics.median(tb), len(ta)


def time_parts(progress):
    rows = []
    for dtype_name in ARGS.dtypes:
        dtype = np.dtype(dtype_name)
        for part in ARGS.parts:
            rng = np.random.default_rng(0)
            torch.manual_seed(0)
            n, t, shape = build(part, dtype)
            for B in ARGS.batches:
                x = rng.standard_normal((B, *shape)).astype(dtype)
                y = rng.integers(0, 10, B) if part == "model+loss" else None
                dout = None
                if y is None:
                    dout = rng.standard_normal(n.forward(x).shape).astype(dtype)
                nf, nb = numpy_steps(n, x, y, dout)
                tf, tb = torch_steps(t, x, y, dout)
                row = dict(part=part, dtype=dtype_name, batch=B)
                row["numpy_fwd_s"], row["torch_fwd_s"], reps_f = side_by_side(nf, tf)
                row["numpy_fwdbwd_s"], row["torch_fwdbwd_s"], reps_b = side_by_side(nb, tb)
                if part == "model+loss":  # torch in the layout convvit train uses, on a copy: Module.to
                    # converts in place, and the NCHW rows of the next batch sizes need t as it is
                    tcl = copy.deepcopy(t).to(memory_format=torch.channels_last)
                    _, tbcl = torch_steps(tcl, x, y, None, torch.channels_last)
                    _, row["torch_channels_last_fwdbwd_s"], _ = side_by_side(nb, tbcl)
                row["repeats"] = min(reps_f, reps_b)
                row["ratio_fwd"] = row["numpy_fwd_s"] / row["torch_fwd_s"]
                row["ratio_fwdbwd"] = row["numpy_fwdbwd_s"] / row["torch_fwdbwd_s"]
                rows.append(row)
                progress(f"{part:<13} {dtype_name} B={B:<4} fwd {1e3 * row['numpy_fwd_s']:8.2f} / "
                         f"{1e3 * row['torch_fwd_s']:8.2f} ms = {row['ratio_fwd']:5.2f}   fwd+bwd "
                         f"{1e3 * row['numpy_fwdbwd_s']:8.2f} / {1e3 * row['torch_fwdbwd_s']:8.2f} ms = "
                         f"{row['ratio_fwdbwd']:5.2f}")
    return rows


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(side):
    """Run in a fresh process: the peak resident growth over float32 forward+backward steps of the model."""
    B = ARGS.memory_batch
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, B)
    if side == "numpy":
        n = nv.ViT(**SEED, rng=0)
        _, step = numpy_steps(n, x, y, None)
    else:
        t = tv.ViT(**SEED)
        _, step = torch_steps(t, x, y, None)
    import gc
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM, the peak resident set, to the current one
    before = _status_kib("VmRSS")  # the model, the batch, the libraries: no step yet
    step()
    step()  # the second step replaces what the first one kept (NumPy's caches, torch's grads)
    peak = _status_kib("VmHWM")
    print(json.dumps(dict(side=side, batch=B, rss_before_kib=before, peak_growth_kib=peak - before)))


def measure_memory():
    out = {}
    for side in ("numpy", "torch"):
        res = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child", side,
                              "--threads", str(ARGS.threads), "--memory-batch", str(ARGS.memory_batch)],
                             capture_output=True, text=True, check=True)
        out[side] = json.loads(res.stdout.strip().splitlines()[-1])
    out["ratio"] = out["numpy"]["peak_growth_kib"] / out["torch"]["peak_growth_kib"]
    return out


def machine():
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (TypeError, KeyError):  # NumPy before 1.26
        blas = {}
    return dict(cpu=cpu_name(), cores=os.cpu_count(), threads=ARGS.threads, python=platform.python_version(),
                numpy=np.__version__, blas=f"{blas.get('name')} {blas.get('version')}",
                torch=torch.__version__, torch_threads=torch.get_num_threads())


def main():
    if ARGS.memory_child:
        memory_child(ARGS.memory_child)
        return
    try:
        check_new_file(ARGS.out, ARGS.overwrite)  # before anything is measured
    except ValueError as e:
        print(f"numpy_vs_torch.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    from tqdm import tqdm
    total = len(ARGS.dtypes) * len(ARGS.parts) * len(ARGS.batches)
    bar = tqdm(total=total, desc="parts", unit="case", file=sys.stderr)

    def progress(line):
        bar.write(line)
        bar.update()

    result = dict(machine=machine(), parts=time_parts(progress))
    bar.close()
    result["memory"] = measure_memory()
    print("\nforward+backward, NumPy / torch (median)\n" + table(result["parts"], "fwdbwd"))
    print("\nforward, NumPy / torch (median)\n" + table(result["parts"], "fwd"))
    mem = result["memory"]
    print(f"\npeak memory of one float32 forward+backward at batch {ARGS.memory_batch}: NumPy "
          f"{mem['numpy']['peak_growth_kib'] / 1024:.0f} MiB, torch {mem['torch']['peak_growth_kib'] / 1024:.0f} MiB "
          f"(ratio {mem['ratio']:.2f})")
    print(json.dumps(result["machine"]))
    if ARGS.out:
        write_json(ARGS.out, result)


if __name__ == "__main__":
    main()
