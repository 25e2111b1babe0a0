"""The newcomer's path: README's two commands, CI running README's test command, no runtime deps."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import ROOT, cli, run_python

README = (ROOT / "README.md").read_text()


def fenced_commands() -> list:
    return [l.strip() for block in re.findall(r"```bash\n(.*?)```", README, re.S) for l in block.splitlines() if l.strip()]


def test_readme_gives_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    setup = README.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    cmds = [l.strip() for block in re.findall(r"```bash\n(.*?)```", setup, re.S) for l in block.splitlines() if l.strip()]
    assert cmds == ["python -m pip install . && python examples/track_experiment.py",
                    "python -m pip install -e '.[test]' && python -m pytest -q"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert f'TEST_CMD="{cmds[1]}"' in ci and 'bash -c "$TEST_CMD"' in ci
    assert "-eq 5" in ci  # pytest's "no tests collected" is handled


def test_no_runtime_dependencies() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^dependencies = \[\]$", text, re.M)
    assert 'exprag-plus = "exprag_plus.cli:main"' in text


def test_package_imports_only_the_standard_library() -> None:
    p = run_python("""
        import sys, json
        before = set(sys.modules)
        import exprag_plus, exprag_plus.cli
        for name in ("schema", "miniyaml", "git", "store", "query", "records", "ids", "experiment"):
            __import__("exprag_plus." + name)
        import os, sysconfig
        roots = tuple(os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib"))
        def third_party(name):
            f = getattr(sys.modules[name], "__file__", None)
            real = os.path.realpath(f) if f else ""
            in_stdlib = real.startswith(roots) and "-packages" not in real
            return bool(f) and not in_stdlib and not name.startswith("exprag_plus")
        third = sorted({m.split(".")[0] for m in set(sys.modules) - before if third_party(m)})
        print(json.dumps(third))
    """, cwd=ROOT)
    assert json.loads(p.stdout) == []


def test_python_dash_m_and_help(tmp_path: Path) -> None:
    p = cli("--help", cwd=tmp_path)
    assert p.returncode == 0 and "runs" in p.stdout and "best" in p.stdout
    p = cli("runs", "--help", cwd=tmp_path)
    assert p.returncode == 0 and "--where" in p.stdout


def test_examples_run_and_are_queryable(tmp_path: Path) -> None:
    for script in ("track_experiment.py", "sweep.py", "run_task.py"):
        run_python(f"import runpy; runpy.run_path({str(ROOT / 'examples' / script)!r}, run_name='__main__')",
                   cwd=tmp_path, env={"GIT_CEILING_DIRECTORIES": str(tmp_path.parent)})
    p = cli("runs", "--json", cwd=tmp_path)
    names = [r["name"] for r in json.loads(p.stdout)["runs"]]
    assert names.count("lr sweep") == 4 and "training my neural network" in names and "task demo" in names
    p = cli("best", "metrics.val_acc", "--where", "sweep=lr", "--json", cwd=tmp_path)
    assert p.returncode == 0 and json.loads(p.stdout)["considered"] == 4
