"""The README's quick start is what CI runs, and its API example runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _quick_start():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    commands = _quick_start()
    assert len(commands) == 2
    assert "convvit check" in commands[0]
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_api_example_runs(tmp_path, monkeypatch):
    import numpy as np

    text = (ROOT / "README.md").read_text()
    code = text.split("\n## API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    env = {"x": np.random.default_rng(0).standard_normal((2, 3, 32, 32)), "labels": np.array([1, 7])}
    exec(compile(code, "README.md", "exec"), env)
    assert env["dx"].shape == (2, 3, 32, 32) and (tmp_path / "w.npz").exists()
    assert env["predicted"].shape == (10,) and (env["predicted"] == env["labels"]).sum() >= 6  # chance: 1


def test_readme_is_a_front_door():
    """At most 250 lines and 16 KB; every doc page it links to exists."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250 and len(text.encode()) <= 16 * 1024
    for link in re.findall(r"\]\((docs/[\w.-]+\.md)", text):
        assert (ROOT / link).is_file(), link
