from __future__ import annotations


def test_the_cluster_runs_a_job(slurm) -> None:
    r = slurm.run("sbatch", "--parsable", "--wrap", "echo hi")
    assert r.returncode == 0, r.stderr
    assert slurm.wait_job(r.stdout.strip()) == "COMPLETED"
