"""The README: at most 10 KB, opening with the two set-up commands (the second is what CI runs), its
Python example runs as written, its links resolve, and the longer material lives in docs/."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ("docs/methods.md", "docs/training.md", "docs/deployment.md", "docs/architecture.md", "docs/results/glue.md",
        "docs/results/engine.md", "docs/results/speed.md", "docs/results/bipft.md")


def test_readme_python_example_runs(tmp_path, monkeypatch):
    import numpy as np

    text = README.read_text()
    block = re.search(r"## Python\n\n```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    assert (tmp_path / "student" / "model.safetensors").is_file() and (tmp_path / "student.bitbert").is_file()
    batch, student, engine = ns["batch"], ns["student"], ns["engine"]
    with ns["torch"].no_grad():
        expected = student.eval()(**batch).logits.argmax(-1).numpy()
    got = engine.logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy()).argmax(-1)
    assert np.array_equal(got, expected)  # the packed file runs the trained student


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    lines = README.read_text().splitlines()
    cmds = [l.split("#")[0].strip() for l in lines[3:5]]
    assert cmds[0].endswith("bitbert distill") and cmds[1].endswith('python -m pytest -q -m "not slow"')
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1] in ci


def test_readme_is_short_and_the_rest_is_in_docs():
    text = README.read_text()
    assert len(text.encode()) <= 10 * 1024, f"README is {len(text.encode())} bytes; move material to docs/"
    for heading in ("## What it is", "## Python", "## Command line", "## Results", "## Limitations"):
        assert heading in text, heading
    for page in DOCS:
        assert (ROOT / page).is_file(), page


def test_no_run_by_run_narration_in_prose_or_code():
    """Device calls are named only in the results pages and the result records, not in the pages a
    user reads first or in the code."""
    narration = re.compile(r"(?<!-)\b[Cc]alls? \d+\b")  # not `merge_results.py --call 20`
    files = [README, *(ROOT / p for p in DOCS if not p.startswith("docs/results/"))]
    files += sorted((ROOT / "bitbert").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    files += sorted((ROOT / "benchmarks").glob("*.sh")) + sorted((ROOT / "tests").glob("*.py"))
    found = [f"{f.relative_to(ROOT)}: {m.group(0)}" for f in files for m in narration.finditer(f.read_text())]
    assert not found, found


def test_links_between_pages_resolve():
    for page in (README, *(ROOT / p for p in DOCS)):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith("http"):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"
