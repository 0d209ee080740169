"""numpy_vit works where torch cannot be imported, and its source never imports torch.

The run happens in a fresh interpreter (``sys.executable``) whose ``sys.meta_path`` starts with a
finder that raises ImportError for ``torch`` and every ``torch.*`` module, so that an installed
torch cannot be picked up, directly or through another package. A second test runs the same
blocker and imports torch, which must fail: the first test cannot pass because the blocker does
nothing.
"""

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
from conftest import BLOCKER

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "numpy_vit"

# numpy_vit computes without torch: the premise of every comparison against torch autograd
pytestmark = pytest.mark.parity


WORKLOAD = textwrap.dedent("""
    import os
    import tempfile

    import numpy as np

    import numpy_vit

    rng = np.random.default_rng(0)
    m = numpy_vit.ViT(32, 2, 3, 32, 4, 8, dtype=np.float64, rng=0)
    x = rng.standard_normal((2, 3, 32, 32))
    labels = np.array([3, 7])
    logits = m.forward(x)
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
    loss, dlogits = numpy_vit.cross_entropy(logits, labels, 0.1)
    assert np.isfinite(loss) and 0 < float(loss) < 20
    dx = m.backward(dlogits)
    assert dx.shape == x.shape and np.abs(dx).max() > 0
    assert sorted(m.grads) == sorted(name for name, _ in m.named_parameters())

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vit.npz")
        numpy_vit.save_npz(path, m.state_dict())
        loaded = numpy_vit.load_npz(path)
        m2 = numpy_vit.ViT(32, 2, 3, 32, 4, 8, dtype=np.float64, rng=1)
        assert not np.array_equal(m2.forward(x), logits)
        m2.load_state_dict(loaded)
        assert np.array_equal(m2.forward(x), logits), "save_npz/load_npz round trip changed the model"

    # the weights and sample images that ship with numpy_vit, with no torch: the trained model classifies them
    trained = numpy_vit.pretrained()
    images, sample_labels, class_names = numpy_vit.sample_images()
    predicted = trained.forward(numpy_vit.normalize(images)).argmax(1)
    assert len(class_names) == 10 and (predicted == sample_labels).sum() >= 6, predicted  # chance: 1 in 10

    blocked = sorted(name for name in sys.modules if name.split(".")[0] == "torch")
    assert not blocked, f"torch modules were loaded: {blocked}"
    print("OK")
""")


def _run(code):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env, capture_output=True,
                          text=True, timeout=120)


def test_numpy_vit_runs_with_torch_blocked():
    r = _run(BLOCKER + "\nimport sys\n" + WORKLOAD)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "OK" in r.stdout.split(), r.stdout


def test_the_blocker_blocks_torch():
    code = BLOCKER + textwrap.dedent("""
        try:
            import torch  # noqa: F401
        except ImportError as e:
            assert "blocked" in str(e), e
            print("BLOCKED")
        else:
            print("IMPORTED")
            sys.exit(1)
        try:
            import torch.nn  # noqa: F401
        except ImportError:
            print("BLOCKED")
        else:
            sys.exit(1)
    """)
    r = _run(code)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert r.stdout.split() == ["BLOCKED", "BLOCKED"], r.stdout


def _sources():
    files = sorted(PACKAGE.rglob("*.py"))
    assert files and (PACKAGE / "__init__.py") in files, f"no sources found under {PACKAGE}"
    return files


def test_no_torch_import_in_the_numpy_sources():
    offenders = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        for needle in ("import torch", "from torch"):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: contains {needle!r}")
        # also the import statements themselves, however spelt (import a, torch; from torch.nn import x),
        # and __import__ / importlib calls naming torch
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                func = node.func
                fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                names = [node.args[0].value] if fname in ("__import__", "import_module") else []
            else:
                continue
            for name in names:
                if isinstance(name, str) and name.split(".")[0] == "torch":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {name}")
    assert not offenders, "; ".join(offenders)
