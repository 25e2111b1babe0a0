"""A real single-node Slurm for the tests in this folder (the core suite leaves this folder out).

Without the Slurm programs the tests skip, unless EXPRAG_PLUS_REQUIRE_SLURM=1 (set by .ci/run), where a
missing or broken cluster fails them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import Cluster, missing_programs  # noqa: E402


def _core_helpers() -> Any:
    """tests/conftest.py's plain helpers (this conftest shadows its module name)."""
    spec = importlib.util.spec_from_file_location("exprag_core_conftest", Path(__file__).resolve().parent.parent / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_core = _core_helpers()
# the names core test modules import from `conftest`, which may mean this module when both folders run
cli, git, read_lines, run_python, ROOT, GIT_ENV = (_core.cli, _core.git, _core.read_lines, _core.run_python,
                                                   _core.ROOT, _core.GIT_ENV)


@pytest.fixture(scope="session")
def slurm() -> Iterator[Cluster]:
    missing = missing_programs()
    if missing:
        message = f"Slurm is not installed here (missing {', '.join(missing)}): apt-get install slurm-wlm munge"
        if os.environ.get("EXPRAG_PLUS_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    cluster = Cluster()
    try:
        cluster.start()
        t0 = time.monotonic()
        r = cluster.run("sbatch", "--parsable", "--wrap", "true")
        assert r.returncode == 0, f"smoke job not accepted: {r.stderr}"
        state = cluster.wait_job(r.stdout.strip().split(";")[0], timeout=60)
        assert state == "COMPLETED", f"smoke job ended {state}:\n{cluster.log('slurmctld')}"
        smoke = time.monotonic() - t0
        _timings.append(f"slurm fixture: daemons up and the node idle in {cluster.started_in_s:.1f}s, "
                        f"then the smoke job ran in {smoke:.1f}s")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm_env(slurm: Cluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    """The cluster with SLURM_CONF set for this test's processes (sbatch, squeue, scontrol). Jobs a test
    leaves (it failed before its end) are cancelled: they would hold the node and starve the next test."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    yield slurm
    if slurm.run("squeue", "-h", "-o", "%i").stdout.strip():
        slurm.run("scancel", "--full", "--user", str(os.getuid()))
        deadline = time.monotonic() + 30
        while slurm.run("squeue", "-h", "-o", "%i").stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.2)


_timings: list = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _timings:
        terminalreporter.write_line(line)
