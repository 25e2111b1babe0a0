"""Shared fixtures: real files, real subprocesses, real git; nothing mocked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Scripts the tests run import modules from their repositories: no __pycache__ may dirty those trees, and
# no bytecode cached within the same second may stand in for a source edited since. Set before any
# fixture (module-scoped ones included) starts a process.
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's runs folder or git config."""
    monkeypatch.delenv("EXPRAG_PLUS_DIR", raising=False)
    monkeypatch.delenv("EXPRAG_PLUS_REPLAY_OF", raising=False)
    gitconfig = tmp_path / "gitconfig-global"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit on main."""
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "train.py").write_text("print('hello')\n")
    git(r, "add", "train.py")
    git(r, "commit", "-q", "-m", "first")
    return r


def run_python(code: str, cwd: Path, env: Optional[Dict[str, str]] = None, timeout: float = 60,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run a snippet in a fresh interpreter that imports this checkout's package."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=full_env,
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"snippet failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def cli(*args: str, cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command line, in a real process."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "exprag_plus", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def read_lines(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture
def main(capsys: pytest.CaptureFixture):
    """The CLI's entry point in this process (fast): returns (exit code, stdout, stderr)."""
    from exprag_plus.cli import main as entry

    def call(*args: str):
        capsys.readouterr()
        rc = entry(list(args))
        out, err = capsys.readouterr()
        return rc, out, err

    return call


def popen_foreground(args: List[str], **kwargs: Any) -> "subprocess.Popen[bytes]":
    """Start a process as a terminal starts its foreground job: SIGINT not ignored, even when this test
    run was started ignoring it (a script's background job is), which the child would inherit."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(args, **kwargs)
    finally:
        signal.signal(signal.SIGINT, before)

