"""The README's first two commands are the ones that work: CI runs the same test command."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_the_main_job_and_the_test_command():
    run, test = _commands()[:2]
    assert run.endswith("inv up")
    assert "pytest" in test


def test_ci_runs_the_readmes_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci.splitlines()


def test_the_readme_stays_a_page_read_top_to_bottom():
    """About 150-200 lines (issue 32): the rest lives in docs/ and CONTRIBUTING.md, which it links."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200
