"""Lightning: `Trainer(logger=ExpragLogger())` (or one of several loggers).

Lightning asks a logger for its `version` while setting up (checkpoint folders are named after it), so
the run starts then and the module's hyperparameters (`save_hyperparameters()`) arrive as a `params`
record. `log_metrics` writes `track` records with Lightning's step; `finalize("failed")` ends the run
failed (interrupted for Ctrl-C) with the exception Lightning is handling; after a successful `fit` the
run stays open so that `trainer.test()` lands in it too. Rank zero only.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any, Dict, Optional, Union

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from ..experiment import Experiment
from ._run import Recorder, exc_info_now

__all__ = ["ExpragLogger"]


class ExpragLogger(Logger):
    """A Lightning logger writing one exprag-plus run; joins an Experiment already open in the process."""

    def __init__(self, name: str = "lightning", metadata: Optional[Dict[str, Any]] = None,
                 root: Optional[str] = None, experiment: Optional[Experiment] = None) -> None:
        super().__init__()
        self._rec = Recorder(name, metadata, root, experiment)

    @property
    def name(self) -> str:
        return self._rec.name

    @property
    def version(self) -> Optional[str]:
        exp = self._start()
        return exp.run_id if exp is not None else None

    @property
    @rank_zero_experiment
    def experiment(self) -> Optional[Experiment]:
        """The exprag-plus Experiment this logger writes to (started on first use)."""
        return self._start()

    def _start(self) -> Optional[Experiment]:
        if rank_zero_only.rank != 0:
            return None
        return self._rec.exp if self._rec.active else self._rec.start()

    @rank_zero_only
    def log_hyperparams(self, params: Union[Dict[str, Any], Namespace], *args: Any, **kwargs: Any) -> None:
        if isinstance(params, Namespace):
            params = vars(params)
        if params:
            self._rec.params(dict(params))

    @rank_zero_only
    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        self._rec.track(metrics, step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if status == "success":
            self._rec.training_done()
            return
        info = exc_info_now()
        interrupted = info is not None and issubclass(info[0], KeyboardInterrupt)
        self._rec.end("interrupted" if interrupted else "failed", info)
