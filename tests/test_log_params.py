"""`Experiment.log_params` and `experiment.current()`: what the framework integrations build on."""

from __future__ import annotations

from pathlib import Path

import pytest

from exprag_plus import Experiment
from exprag_plus.experiment import current

from conftest import read_lines


def test_log_params_appends_a_params_record_and_updates_metadata(runs_dir: Path) -> None:
    with Experiment("p", {"a": 1}, root=str(runs_dir), snapshot=False) as exp:
        exp.log_params({"lr": 0.1, "path": Path("/x"), "bad": float("nan"), "odd": object()})
        assert exp.metadata["a"] == 1 and exp.metadata["lr"] == 0.1 and exp.metadata["path"] == "/x"
    recs = read_lines(exp.path)
    (params,) = [r for r in recs if r["type"] == "params"]
    assert params["params"]["lr"] == 0.1 and params["params"]["bad"] == "NaN" and "__repr__" in params["params"]["odd"]
    assert recs[0]["metadata"] == {"a": 1} and recs[-1]["type"] == "run_end"


@pytest.mark.filterwarnings("ignore:exprag-plus")
def test_log_params_never_raises(runs_dir: Path) -> None:
    exp = Experiment("p", root=str(runs_dir), snapshot=False)
    exp.close()
    exp.log_params({"late": 1})  # after close: dropped with a warning, no exception
    exp.log_params(None)  # type: ignore[arg-type]
    assert not [r for r in read_lines(exp.path) if r["type"] == "params"]


def test_current_is_the_latest_open_experiment(runs_dir: Path) -> None:
    before = current()  # another test of this process may have left a run open
    a = Experiment("a", root=str(runs_dir), snapshot=False)
    b = Experiment("b", root=str(runs_dir), snapshot=False)
    assert current() is b
    b.close()
    assert current() is a
    a.close()
    assert current() is before
