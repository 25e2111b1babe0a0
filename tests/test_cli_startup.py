"""A CLI call builds and imports only its own command: the map in `cli.COMMANDS` must stay true."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exprag_plus import cli

from conftest import ROOT


def _choices(parser: object) -> set:
    sub = next(a for a in parser._actions if a.dest == "command")  # type: ignore[attr-defined]
    return set(sub.choices)


def test_the_full_parser_has_exactly_the_mapped_commands() -> None:
    assert _choices(cli.build_parser()) == set(cli.COMMANDS)


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_each_command_is_registered_by_its_mapped_module(name: str) -> None:
    assert name in _choices(cli.build_parser(name))


@pytest.mark.parametrize("argv, expected", [
    (["runs", "--limit", "3"], "runs"), (["--root", "run", "show", "x"], "show"), (["--root=d", "plot"], "plot"),
    (["--version"], None), ([], None), (["nosuch", "runs"], None), (["-h", "runs"], None),
    (["runs", "-h"], "runs"),
])
def test_command_of(argv: list, expected: object) -> None:
    assert cli.command_of(argv) == expected


def _modules_after(argv: list) -> set:
    code = ("import sys, io, contextlib\nfrom exprag_plus import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        cli.main({argv!r})\n    except SystemExit:\n        pass\n"
            "import json\nprint(json.dumps(sorted(m for m, mod in sys.modules.items() if m.startswith('exprag_plus')"
            "                        and type(mod).__name__ != '_Deferred')))")  # a lazy module not yet run costs nothing
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_runs_help_imports_no_feature_module() -> None:
    loaded = _modules_after(["runs", "--help"])
    assert "exprag_plus.cli" in loaded
    assert not {m for m in loaded if m.startswith("exprag_plus.cli_")}
    assert not loaded & {"exprag_plus.plot", "exprag_plus.git", "exprag_plus.wrapper", "exprag_plus.schema",
                         "exprag_plus.actions", "exprag_plus.query", "exprag_plus.store", "exprag_plus.index",
                         "exprag_plus.ids", "exprag_plus.records"}


@pytest.mark.parametrize("name", ["runs", "show", "actions", "task"])
def test_a_known_command_builds_its_parser_alone(name: str) -> None:
    assert _choices(cli.build_parser(name)) == {name}


def test_run_in_a_clean_repository_loads_no_module_it_does_not_use(tmp_path: Path) -> None:
    """hashlib loads OpenSSL, socket and traceback and shutil/tempfile cost start-up: a run of clean code
    hashes nothing, writes no temporary file and raises nothing."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q"], ["-c", "user.name=a", "-c", "user.email=a@a", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    probe = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from exprag_plus import cli\n"
             "rc = cli.main(['run', '--', 'true'])\n"
             "print(rc, sorted(m for m in ('hashlib', 'socket', 'traceback', 'shutil', 'tempfile') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-S", "-c", probe], cwd=repo, capture_output=True, text=True, check=True)
    assert p.stdout == "0 []\n", p.stderr


def test_a_feature_command_imports_its_module_only() -> None:
    loaded = _modules_after(["log", "--help"])
    assert "exprag_plus.cli_run" in loaded
    assert not loaded & {"exprag_plus.cli_pictures", "exprag_plus.cli_task", "exprag_plus.cli_share",
                         "exprag_plus.plot", "exprag_plus.schema"}


@pytest.mark.parametrize("argv", [["--help"], ["-h", "runs"]])
def test_top_level_help_still_lists_every_command(argv: list) -> None:
    out = subprocess.run([sys.executable, "-m", "exprag_plus", *argv], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    for name in cli.COMMANDS:
        assert f"    {name}" in out


@pytest.mark.parametrize("code", ["import exprag_plus", pytest.param(
    "from exprag_plus import cli; cli.build_parser('runs')",
    marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="importlib.util imports typing before 3.11"))])
def test_the_start_up_path_does_not_import_typing(code: str) -> None:
    """`typing` alone costs about as much as a bare interpreter start; annotations on this path are strings."""
    probe = f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}; print('typing' in sys.modules)"
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out == "False\n"


def test_help_imports_neither_shutil_nor_datetime() -> None:
    """argparse imports shutil (and its archive modules) for the terminal width unless given one; a
    record's time is parsed with datetime only when a command reads times."""
    probe = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from exprag_plus import cli\n"
             "try:\n    cli.main(['runs', '--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('shutil', 'datetime') if m in sys.modules), file=sys.stderr)")
    p = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True,
                       env={**os.environ, "COLUMNS": "60"})
    assert p.stderr == "[]\n"
    assert max(map(len, p.stdout.splitlines())) <= 58 < max(map(len, subprocess.run(
        [sys.executable, "-S", "-c", probe], capture_output=True, text=True, check=True,
        env={**os.environ, "COLUMNS": "200"}).stdout.splitlines()))


def test_a_lazy_module_met_by_two_threads_at_once_is_whole_for_both(tmp_path: Path) -> None:
    """The MCP server's workers met a lazy module together: with the stdlib LazyLoader (< 3.12) the second
    saw it half-made ("module 'exprag_plus.index' has no attribute 'load'", trial 6)."""
    (tmp_path / "slow_module_for_lazy.py").write_text("import time\ntime.sleep(0.5)\nVALUE = 1\n")
    probe = (f"import sys, threading; sys.path[:0] = [{str(ROOT)!r}, {str(tmp_path)!r}]\n"
             "from exprag_plus.lazy import lazy\n"
             "m = lazy('slow_module_for_lazy')\n"
             "got = []\n"
             "def read():\n"
             "    try:\n        got.append(m.VALUE)\n"
             "    except AttributeError as exc:\n        got.append(repr(exc))\n"
             "ts = [threading.Thread(target=read) for _ in range(4)]\n"
             "[t.start() for t in ts]; [t.join() for t in ts]\n"
             "print(got)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out == "[1, 1, 1, 1]\n"
