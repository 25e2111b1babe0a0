"""Keras 3: `model.fit(..., callbacks=[ExpragCallback()])`, on any backend.

`fit`'s parameters (epochs, steps) and the compiled optimizer's config become the run's metadata; each
epoch's logs are a `track` record with the epoch as step; with `batch_every=N`, every Nth training batch
is tracked too, as `batch/<metric>` with the optimizer's iteration count as step.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

import keras

from ..experiment import Experiment
from ._run import Recorder

__all__ = ["ExpragCallback"]


def _main_process() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


class ExpragCallback(keras.callbacks.Callback):
    """Records a `fit` as one run; joins an Experiment already open in the process instead of starting one."""

    def __init__(self, name: str = "keras", metadata: Optional[Dict[str, Any]] = None, root: Optional[str] = None,
                 experiment: Optional[Experiment] = None, batch_every: int = 0) -> None:
        super().__init__()
        self._rec = Recorder(name, metadata, root, experiment)
        self._batch_every = max(0, int(batch_every))
        self._main = _main_process()
        self._fitting = False

    @property
    def experiment(self) -> Optional[Experiment]:
        return self._rec.exp

    def on_train_begin(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._fitting = True
        if self._main:
            self._rec.start(self._config())

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if self._main and logs:
            self._rec.track(logs, epoch)

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        if self._main and self._batch_every and logs and batch % self._batch_every == 0:
            self._rec.track({f"batch/{k}": v for k, v in logs.items()}, self._iterations(batch))

    def on_test_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        # model.evaluate(..., callbacks=[same callback]) after fit: the run's final test metrics (fit's own
        # validation passes come as val_* in on_epoch_end already).
        if self._main and logs and not self._fitting and self._rec.active:
            self._rec.track({f"test/{k}": v for k, v in logs.items()}, self._iterations(None))

    def on_train_end(self, logs: Optional[Dict[str, Any]] = None) -> None:
        self._fitting = False
        if self._main:
            self._rec.training_done()

    def _iterations(self, fallback: Any) -> Any:
        try:
            return int(self.model.optimizer.iterations)
        except Exception:
            return fallback

    def _config(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        params = getattr(self, "params", None) or {}
        out["fit"] = {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool)) or v is None}
        try:
            out["optimizer"] = self.model.optimizer.get_config()
        except Exception:
            pass
        try:
            out["model"] = {"name": self.model.name, "params": int(self.model.count_params())}
        except Exception:
            pass
        return out
