"""Hypothesis profiles: ``ci`` (the default) is derandomized, so every run of the suite draws the
same examples; ``dev`` draws fresh ones and more of them (HYPOTHESIS_PROFILE=dev pytest).

And what several test files share: the tiny training configuration ``TINY``, the quiet in-process
``train`` keywords ``QUIET``, ``convvit`` (the command run in this process, through
torch_vit.cli.main), ``usage_error`` (the same, for a bad command line: exit status 2 and one line),
``convvit_process`` (the command in a fresh interpreter, for what only a real process shows),
the session's one ``convvit train`` run (``ema_cli_run``), and ``BLOCKER``, the prelude that runs code in a
fresh interpreter as where torch is not installed."""

import contextlib
import io
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, max_examples=200, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# A model small enough for a training run of a few epochs in well under a second.
TINY = dict(image_size=(16, 16), patch_size=2, embedding_dim=16, depth=1, head_channels=8, batch_size=64,
            test_batch_size=128)

# train(...) keywords: no progress bar, no log lines, on the CPU.
QUIET = dict(progress=False, log=lambda *a: None, device="cpu")


@dataclass
class Result:
    """What a convvit command did: its exit status and everything it printed."""
    returncode: int
    stdout: str
    stderr: str


def convvit(*args):
    """``convvit ARGS`` run in this process by torch_vit.cli.main, stdout and stderr captured."""
    from torch_vit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse's own exits (none expected): their status counts the same
            code = e.code
    return Result(code, out.getvalue(), err.getvalue())


def load_benchmark(name):
    """benchmarks/NAME.py as a module (benchmarks/ is not a package; its scripts import one another by name)."""
    import importlib.util

    bench = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
    sys.path.insert(0, bench)
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(bench, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(bench)


def paired(a, b):
    """((name, a[name]), b[name]) for every name of two state dicts, which must hold the same names in the same
    order: a weight missing from one side fails here instead of going unchecked."""
    assert list(a) == list(b), (list(a), list(b))
    return zip(a.items(), b.values())


def usage_error(*args):
    """``convvit ARGS`` in this process must fail as bad input does: exit status 2 and exactly one line
    on stderr, "convvit: error: ...", with no traceback. Returns that line."""
    r = convvit(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convvit: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def convvit_process(*args, timeout=300):
    """``convvit ARGS`` in a fresh interpreter (python -m torch_vit.cli), as a user runs it."""
    return subprocess.run([sys.executable, "-m", "torch_vit.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)



# The session's one `convvit train` run, which test_train.py (the outputs, evaluate, check, and the
# straight run beside the killed one) and test_ema.py (the moving average) inspect: the default recipe
# with every optional part the outputs record (betas, no-decay, pad-crop) and the moving average,
# 2 epochs on the synthetic data.
EMA_CLI_ARGS = ("train", "--data", "synthetic", "--epochs", "2", "--ema", "0.99", "--betas", "0.85,0.99",
                "--no-decay", "norm,pos", "--pad-crop", "2", "--no-progress", "--device", "cpu")


@pytest.fixture(scope="session")
def ema_cli_run(tmp_path_factory):
    """``convvit train EMA_CLI_ARGS --out DIR``, then ``convvit evaluate --checkpoint DIR/checkpoint.pt
    --out DIR/ev``, once per session: (DIR, the train Result, the evaluate Result)."""
    out = tmp_path_factory.mktemp("ema_cli_run") / "run"
    trained = convvit(*EMA_CLI_ARGS, "--out", out)
    evaluated = convvit("evaluate", "--checkpoint", out / "checkpoint.pt", "--no-progress", "--out", out / "ev")
    return out, trained, evaluated


# A prelude for a fresh interpreter (python -c BLOCKER + code): a meta-path finder that raises ImportError for
# torch and every torch.* module, so that code runs as where torch is not installed.
BLOCKER = textwrap.dedent("""
    import sys

    class _BlockTorch:
        \"\"\"A meta-path finder that refuses torch and its submodules.\"\"\"

        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked in this test (import of {name!r})")
            return None

    for _name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        del sys.modules[_name]
    sys.meta_path.insert(0, _BlockTorch())
""")
