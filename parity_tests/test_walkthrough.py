"""docs/walkthrough_attention.py runs, and its checks hold, three ways: as a script (with torch), as a
script with torch blocked (the NumPy-only path: finite differences instead of autograd), and as a
notebook (jupytext to .ipynb, executed by nbclient on a python3 kernel).

What is checked from the output: every `cmp` row has the right shape and is close; every `fd` row
is ok and the six gradients the walkthrough promises are among them; the grader FAILs the shipped
wrong softmax backward (on dS, dq and dk, not dv) and PASSes the right one, which the grader's own
return value (`Grade.passed`) confirms; the figures are drawn. The notebook test needs jupytext,
nbclient and ipykernel (`pip install -e ".[notebook]"`, part of `.[all]`): without them it fails,
it does not skip.
"""

import importlib
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import BLOCKER

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "walkthrough_attention.py"
GRADIENTS = ("dattention", "dattend (dP)", "dq", "dk", "dv", "dx (attn branch)")

# appended after the walkthrough's own code (script run through runpy, or an extra notebook cell):
# the grader's return values, not its printout
RESULT = 'print("RESULT", wrong.passed, right.passed, sorted(r[0] for r in wrong.rows if not r[1]))'


def _env(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["MPLBACKEND"] = "Agg"
    env["WALKTHROUGH_FIGURES"] = str(tmp_path)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(args, tmp_path):
    r = subprocess.run(args, cwd=str(ROOT), env=_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"
    return r.stdout


def _check_output(out, torch_present, result):
    lines = out.splitlines()
    cmp_rows = [ln for ln in lines if ln.startswith("cmp ")]
    bad = [ln for ln in cmp_rows if " shape ok " not in ln or " close True " not in ln]
    assert not bad, "cmp rows not ok:\n" + "\n".join(bad)
    torch_rows = [ln for ln in cmp_rows if " vs torch " in ln]
    assert len([ln for ln in cmp_rows if " vs numpy_vit " in ln]) >= 8
    if torch_present:  # every intermediate forward and backward, against torch
        names = {re.match(r"cmp (.+?)\s+vs torch", ln).group(1) for ln in torch_rows}
        for name in ("k", "q", "v", "attend S", "attention A", "out", "y (output)", "dattention dA", "dattend dS",
                     "dP", "dq", "dk", "dv", "dx (attn branch)"):
            assert name in names, f"no torch row for {name}: {sorted(names)}"
    else:
        assert not torch_rows, torch_rows
        assert any(ln.startswith("torch: not available") for ln in lines), out[:2000]

    fd_rows = [ln for ln in lines if ln.startswith("fd ")]
    assert fd_rows and all(ln.rstrip().endswith(" ok") for ln in fd_rows), "\n".join(fd_rows)
    fd_names = {re.match(r"fd\s+(.+?)\s+\d+ entries", ln).group(1) for ln in fd_rows}
    assert set(GRADIENTS) <= fd_names, fd_names

    # the grader: the wrong version fails on dS, dq, dk (dv never meets the softmax), the right one passes
    grader = [ln for ln in lines if ln.startswith("grader")]
    assert "grader: FAIL (wrong version, as expected)" in grader and "grader: PASS" in grader, "\n".join(grader)
    first = grader.index("grader: FAIL (wrong version, as expected)")
    assert grader.index("grader: PASS") > first
    wrong, right = grader[:first], grader[first + 1:grader.index("grader: PASS")]
    verdict = lambda rows: {ln.split()[1]: ln.split()[2] for ln in rows}  # noqa: E731
    assert verdict(wrong) == {"dS": "FAIL", "dq": "FAIL", "dk": "FAIL", "dv": "PASS"}, "\n".join(wrong)
    assert verdict(right) == {"dS": "PASS", "dq": "PASS", "dk": "PASS", "dv": "PASS"}, "\n".join(right)
    for ln in wrong[:3]:
        assert re.search(r"largest difference at \(\d+, \d+, \d+, \d+\).*\|diff\| = [\d.e+-]+ of max", ln), ln
    reference = "torch autograd" if torch_present else "centred finite differences"
    assert any(ln.startswith(f"reference: {reference};") for ln in lines)

    assert f"walkthrough: all checks passed ({'with' if torch_present else 'without'} torch)" in lines
    if result:  # the Grade objects, read back after the run (not printed by the script alone)
        assert "RESULT False True ['dS', 'dk', 'dq']" in lines, [ln for ln in lines if ln.startswith("RESULT")]
    else:
        assert "RESULT" not in out


def _check_figures(tmp_path):
    for name in ("attention_maps", "gradcam"):
        path = tmp_path / f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert path.stat().st_size > 20_000, path  # ten images and their maps, not a blank canvas


def test_walkthrough_as_a_script(tmp_path):
    out = _run([sys.executable, str(SCRIPT)], tmp_path)
    _check_output(out, torch_present=True, result=False)
    _check_figures(tmp_path)


def test_walkthrough_without_torch(tmp_path):
    code = BLOCKER + textwrap.dedent(f"""
        import runpy
        sys.argv = [{str(SCRIPT)!r}]
        globals().update(runpy.run_path({str(SCRIPT)!r}, run_name="__main__"))
        assert not [m for m in sys.modules if m.split(".")[0] == "torch"], "torch was imported"
        {RESULT}
    """)
    out = _run([sys.executable, "-c", code], tmp_path)
    _check_output(out, torch_present=False, result=True)
    _check_figures(tmp_path)


def _require(module):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"the notebook test needs {module} ({e}): pip install -e '.[notebook]' "
                    "(CI installs it with .[all])", pytrace=False)


def test_walkthrough_as_a_notebook(tmp_path, monkeypatch):
    for module in ("jupytext", "ipykernel"):
        _require(module)
    nbclient, nbformat = _require("nbclient"), _require("nbformat")
    ipynb = tmp_path / "walkthrough_attention.ipynb"
    r = subprocess.run([sys.executable, "-m", "jupytext", "--to", "ipynb", "--output", str(ipynb), str(SCRIPT)],
                       cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    nb = nbformat.read(ipynb, as_version=4)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds.count("markdown") >= 10 and kinds.count("code") >= 10, kinds
    nb.cells.append(nbformat.v4.new_code_cell(RESULT))

    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend draws the figures
    monkeypatch.setenv("PYTHONPATH", _env(tmp_path)["PYTHONPATH"])  # the kernel imports this checkout
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "docs")}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    text, pngs = [], 0
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                text.append(o.text)
            elif o.output_type == "error":
                pytest.fail(f"{o.ename}: {o.evalue}")
            pngs += "image/png" in o.get("data", {})
    _check_output("".join(text), torch_present=True, result=True)
    assert pngs == 2, f"expected the two figures inline, got {pngs}"
