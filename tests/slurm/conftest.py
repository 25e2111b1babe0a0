"""A real single-node Slurm for the tests in this folder (the core suite leaves this folder out).

Without the Slurm programs the tests skip, unless EXPRAG_PLUS_REQUIRE_SLURM=1 (set by .ci/run), where a
missing or broken cluster fails them.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import Cluster, missing_programs  # noqa: E402


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
        print(f"\nslurm fixture: daemons up in {cluster.started_in_s:.1f}s, smoke job {smoke:.1f}s",
              file=sys.stderr)
        cluster.smoke_s = smoke
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm_env(slurm: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The cluster with SLURM_CONF set for this test's processes (sbatch, squeue, scontrol)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    return slurm
