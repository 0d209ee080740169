"""The docs' tables of figures are rendered from benchmarks/results/ (benchmarks/render_docs.py): the committed
docs match what the results render, a changed figure in any results file makes the check fail and name the table,
and benchmarks/record_run.py keeps a run's record with the figures read from its files."""

import json
import pathlib
import shutil

import pytest
from conftest import load_benchmark

ROOT = pathlib.Path(__file__).resolve().parents[1]


render_docs = load_benchmark("render_docs")
record_run = load_benchmark("record_run")


def test_committed_docs_match_the_committed_results(capsys):
    assert render_docs.main(["--check"]) == 0, capsys.readouterr().err


def test_every_renderer_has_its_block_and_every_block_a_renderer():
    names = [m["name"] for path in render_docs.doc_files(ROOT) for m in render_docs.BLOCK.finditer(path.read_text())]
    assert sorted(set(names)) == sorted(render_docs.RENDERERS)
    assert len(names) == len(set(names)), "a table is rendered in two places"


@pytest.mark.parametrize("file, path, value, where", [
    ("runs/muon-s2/run.json", ["test_acc"], 73.62, "README.md: table 'summary'"),
    ("runs/pad2/run.json", ["train_acc"], 72.13, "docs/experiments.md: table 'experiments'"),
    ("parity_errors.json", ["stats", "float64 attention unit", "worst_rel"], 3.5e-14, "docs/parity.md: table 'parity-errors'"),
    ("float32_error.json", ["runs/synthetic-numpy/checkpoint.pt", "torch32_vs_float64", 0], 2.4e-4, "docs/parity.md: table 'float32-error'"),
    ("numpy_vs_torch.json", ["parts", 0, "ratio_fwd"], 1.3, "docs/benchmarks.md: table 'numpy-vs-torch-fwd'"),
    ("train_throughput_default.json", ["results", "augment", "ratio"], 99.0, "docs/benchmarks.md: table 'train-speed'"),
    ("run_overhead.json", ["numpy_check_share"], 0.5, "docs/benchmarks.md: table 'run-overhead'"),
    ("trajectory_drift.json", ["results", 2, "worst_after_step", "50"], 1.3e-9, "docs/numpy-training.md: table 'trajectory-drift'"),
    ("flip_tta.json", ["runs/muon-s4/checkpoint.pt", "mirror"], 0.7328, "docs/experiments.md: table 'flip-tta'"),
    ("suite_time.json", ["runs", 0, "wall_s"], 999.0, "README.md: table 'summary'"),
])
def test_a_changed_figure_fails_the_check_and_names_its_table(tmp_path, capsys, file, path, value, where):
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    data = json.loads((results / file).read_text())
    node = data
    for key in path[:-1]:
        node = node[key]
    assert node[path[-1]] != value
    node[path[-1]] = value
    (results / file).write_text(json.dumps(data))
    assert render_docs.main(["--check", "--results", str(results)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"render_docs: {where} differs"), err


def test_rendering_writes_the_figure_and_check_then_passes(tmp_path, capsys):
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    shutil.copytree(ROOT / "benchmarks" / "results", root / "benchmarks" / "results")
    figures = dict(plain=0.5, mirror=0.51234, mean_logits=0.6, mean_probabilities=0.70005, test_images=12345)
    (root / "benchmarks" / "results" / "flip_tta.json").write_text(json.dumps({"runs/x/checkpoint.pt": figures}))
    (root / "README.md").write_text("# x\n\n<!-- render: flip-tta -->\nstale\n<!-- /render -->\n")
    assert render_docs.main(["--check", "--root", str(root)]) == 1
    assert render_docs.main(["--root", str(root)]) == 0
    text = (root / "README.md").read_text()
    assert "| `runs/x/checkpoint.pt` | 50.00% | 51.23% | 60.00% | 70.00% | 12,345 |" in text
    assert "stale" not in text
    assert render_docs.main(["--check", "--root", str(root)]) == 0


def test_an_unknown_block_is_one_line(tmp_path):
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text("<!-- render: no-such-table -->\n<!-- /render -->\n")
    with pytest.raises(SystemExit, match=r"README.md: expected a block among summary, .*got 'no-such-table'"):
        render_docs.main(["--check", "--root", str(root)])


def _fake_run(folder, ema=False):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dict(seed=3, threads=1, epochs=2, data="synthetic",
                                                        device="cpu", torch="2.14.1+cpu")))
    rows = [dict(epoch=0, train_acc=0.25, test_acc=0.5, time=10.25), dict(epoch=1, train_acc=0.5, test_acc=0.75,
                                                                           time=11.5)]
    if ema:
        rows[-1]["ema_test_acc"] = 0.625
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "report.json").write_text(json.dumps(dict(test_acc=0.7512)))


def test_record_run_reads_the_figures_from_the_runs_files(tmp_path):
    _fake_run(tmp_path / "run", ema=True)
    out = record_run.record(tmp_path / "run", "tiny", "NumPy backend", "OMP_NUM_THREADS=1 convvit train --data "
                            "synthetic --epochs 2 --seed 3 --out runs/tiny", results=tmp_path / "results")
    run = json.loads((out / "run.json").read_text())
    assert (run["test_acc"], run["train_acc"], run["ema_test_acc"]) == (75.12, 50.0, 62.5)
    assert (run["seed"], run["threads"], run["epochs"], run["epochs_run"], run["wall_s"]) == (3, 1, 2, 2, 22)
    assert run["flags"] == "--epochs 2 --seed 3"
    assert run["machine"].endswith("torch 2.14.1")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "metrics.jsonl", "report.json", "run.json"]
    with pytest.raises(SystemExit, match="already records"):
        record_run.record(tmp_path / "run", "tiny", "g", "c", results=tmp_path / "results")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="expected a finished run in .*empty, got no config.json, metrics.jsonl"):
        record_run.record(tmp_path / "empty", "x", "g", "c", results=tmp_path / "results")


def test_record_run_refuses_in_one_line_with_exit_2(tmp_path, capsys):
    """The command line: a name that already has a record is bad input (exit 2, one line), and nothing changes."""
    _fake_run(tmp_path / "run", ema=False)
    held = ROOT / "benchmarks" / "results" / "runs" / "muon-s4" / "run.json"
    before = held.read_bytes()
    assert record_run.main([str(tmp_path / "run"), "--name", "muon-s4", "--group", "g", "--command", "c"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already records" in err[0] and "--overwrite to replace it" in err[0], err
    assert held.read_bytes() == before
