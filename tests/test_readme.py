"""The README's Python example runs as written, and its first lines are the two set-up commands."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    block = re.search(r"## Python\n\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    assert (tmp_path / "my-binary-bert" / "model.safetensors").is_file()
    assert ns["same"].bitbert_config == ns["cfg"]


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    lines = README.read_text().splitlines()
    cmds = [l.split("#")[0].strip() for l in lines[3:5]]
    assert cmds[0].endswith("bitbert distill") and cmds[1].endswith('python -m pytest -q -m "not slow"')
    ci = (README.parent / ".ci" / "run").read_text()
    assert cmds[1] in ci
