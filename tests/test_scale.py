"""Big runs: show, compare and history answer alike whether the run is read whole or streamed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from exprag_plus import Experiment, query, store


def _big(root: Path, n: int, end: bool = True) -> str:
    exp = Experiment("big", metadata={"lr": 0.1}, root=str(root), snapshot=False)
    for i in range(n):
        v = float("nan") if i % 97 == 5 else (1.0 / (i + 1) if i % 13 else 2.0 - i * 1e-3)
        exp.track({"step": i if i % 50 else None, "loss": v, "acc": i % 7, "pad": "x" * 50})
        if i % 200 == 3:
            exp.track({"other": i})
    if end:
        exp.close()
    else:
        exp._closed = True
    with open(exp.path, "a") as f:
        f.write(json.dumps({"type": "note", "run_id": exp.run_id, "seq": 10**6, "time": "2026-01-01T00:00:00.000000Z",
                            "elapsed_ms": 1, "text": "after"}) + "\n")
    return exp.path


@pytest.mark.parametrize("end", [True, False])
def test_streamed_answers_equal_whole_reads(tmp_path: Path, end: bool) -> None:
    path = _big(tmp_path / "runs", 3000, end)
    assert os.path.getsize(path) > 200_000  # beyond the tail the reader parses
    light, whole = store.Run.read(path), store.Run.read(path, full=True)
    assert light._records is None
    for n in (0, 1, 2, 3, 4, 5, 17, 100, 2999, 3000, 5000):
        for metric in ("loss", "acc", "other", "step"):
            assert query.history(store.Run.read(path), metric, n) == query.history(whole, metric, n)
    assert query.history(light, "loss", 100, step=301) == query.history(whole, "loss", 100, step=301)
    assert query.show(store.Run.read(path)) == query.show(whole)
    assert query.compare(light, store.Run.read(path)) == query.compare(whole, whole)
    assert light._records is None  # none of it held the body
    with pytest.raises(query.QueryError, match="nearest: loss"):
        query.history(store.Run.read(path), "los", 10)


def test_show_reads_no_body_when_run_end_has_counts(tmp_path: Path) -> None:
    path = _big(tmp_path / "runs", 3000)
    run = store.Run.read(path)
    counts = run.end["records"]
    assert counts["track"] == 3000 + 15 and counts["run_start"] == 1 and counts["run_end"] == 1
    with open(path, "r+b") as f:  # the body is made unreadable: show must not look at it
        f.seek(5000)
        f.write(b"\x00" * 100_000)
    res = query.show(store.Run.read(path))
    assert res["records"] == dict(counts, note=1)
