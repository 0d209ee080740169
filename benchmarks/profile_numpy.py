"""Where the NumPy model's time goes: numpy_vit's forward and backward of the seed model and its loss, each
module's own time (its forward and backward less those of the modules inside it), summed by kind, as shares of
the whole step.

    python benchmarks/profile_numpy.py --out benchmarks/results/profile_numpy.json --overwrite

Kinds: the 1x1 convolutions (attention and feed-forward), the patch convolution, LayerNorm, GELU, the
attention's own work (its two products, the mask and the softmax, beside its four 1x1 convolutions), the
residual adds (the blocks), the positional embedding's add, the head's pooling, flatten and linear layer, the loss,
and the calls between modules (the own time of the modules that only call others, and of the model's forward and
backward). Each module's forward and backward are wrapped in a timer for the run. BLAS runs --threads threads (default: every core),
set before NumPy loads, as in numpy_vs_torch.py.
"""

import argparse
import os
import sys
import time

REST = "calls between modules"


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--steps", type=int, default=10, help="timed steps, after 2 untimed (default 10)")
    ap.add_argument("--out", default=None, help="JSON file to write (atomically)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return ap.parse_args(argv)


ARGS = _args(sys.argv[1:] if __name__ == "__main__" else [])
if __name__ == "__main__":
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402  (after the thread settings)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from numpy_vit.io import check_new_file, write_json  # noqa: E402
from numpy_vit.loss import cross_entropy  # noqa: E402
from numpy_vit.model import ViT, seed_config  # noqa: E402
from record_run import cpu_name  # noqa: E402

SEED = seed_config()


def kind(name, module):
    """The row a module's own time goes to."""
    cls = type(module).__name__
    if cls == "Conv2d":
        return "1x1 convolutions" if module.kernel_size == 1 else "patch convolution"
    if cls == "MhSelfAttention":
        return "attention's own work (products, mask, softmax)"
    if cls == "Transformer":
        return "residual adds"
    if cls == "Embedding":
        return "positional embedding's add"
    if name.startswith("mlp_head.") and cls != "GELU":
        return "head's pooling, flatten and linear layer"
    return {"LayerNorm": "LayerNorm", "GELU": "GELU"}.get(cls, REST)


class Timers:
    """Each module's forward and backward timed; own time = its time less its children's (a stack of those)."""

    def __init__(self, model):
        self.own, self.stack = {}, []
        for name, module in model.named_modules():
            if name:  # the model's own forward and backward are the step, timed around them
                for method in ("forward", "backward"):
                    object.__setattr__(module, method, self.wrap(getattr(module, method), kind(name, module)))

    def wrap(self, fn, row):
        def timed(*args):
            self.stack.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent = time.perf_counter() - start
                children = self.stack.pop()
                self.own[row] = self.own.get(row, 0.0) + spent - children
                if self.stack:
                    self.stack[-1] += spent
        return timed


def profile(batch, dtype, steps):
    rng = np.random.default_rng(0)
    model = ViT(**SEED, dtype=np.dtype(dtype), rng=rng)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(dtype)
    y = rng.integers(0, 10, batch)

    def step():
        loss, dlogits = cross_entropy(model(x), y)
        model.backward(dlogits)

    step(), step()
    timers = Timers(model)
    loss_s, wall = 0.0, 0.0
    for _ in range(steps):
        start = time.perf_counter()
        logits = model(x)
        mark = time.perf_counter()
        _, dlogits = cross_entropy(logits, y)
        loss_s += time.perf_counter() - mark
        model.backward(dlogits)
        wall += time.perf_counter() - start
    own = dict(timers.own, loss=loss_s)
    own[REST] = own.get(REST, 0.0) + wall - sum(own.values())  # the model's own forward and backward
    rows = [dict(part=k, share=round(v / wall, 4), ms_per_step=round(1e3 * v / steps, 2))
            for k, v in sorted(own.items(), key=lambda kv: -kv[1])]
    return dict(ms_per_step=round(1e3 * wall / steps, 1), parts=rows)


def main():
    args = ARGS
    try:
        check_new_file(args.out, args.overwrite)  # before anything is measured
        if args.batch < 1 or args.steps < 1 or args.threads < 1:
            raise ValueError(f"--batch, --steps and --threads: expected at least 1, got {args.batch}, {args.steps} "
                             f"and {args.threads}")
    except ValueError as e:
        print(f"profile_numpy.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    result = profile(args.batch, args.dtype, args.steps)
    full = dict(command="python benchmarks/profile_numpy.py " + " ".join(sys.argv[1:]), batch=args.batch,
                dtype=args.dtype, steps=args.steps, model=SEED,
                machine=dict(cpu=cpu_name(), cores=os.cpu_count(), threads=args.threads, numpy=np.__version__),
                **result)
    for row in full["parts"]:
        print(f"{row['part']:<55} {100 * row['share']:5.1f}%  {row['ms_per_step']:8.2f} ms")
    print(f"the step: {full['ms_per_step']} ms")
    if args.out:
        write_json(args.out, full)


if __name__ == "__main__":
    main()
