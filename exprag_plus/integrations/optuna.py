"""Optuna: `study.optimize(objective, callbacks=[ExpragCallback()])`.

One run per finished trial: the trial's params are its metadata (with `optuna` = {study, trial, state,
...}), its intermediate values are `track` records {step, intermediate_value} and its value a final
`track` {value} (`values` for several objectives). A pruned trial is a completed run whose metadata says
PRUNED; a failed one (kept going by `catch=`) is a failed run. When an Experiment is open in the process
(a training integration inside the objective, or one run for the whole study) the trial joins it instead.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import optuna

from ..experiment import Experiment, current
from ._run import FrameworkFailed, redact

__all__ = ["ExpragCallback"]


class ExpragCallback:
    """A callable `(study, frozen_trial)` recording each finished trial."""

    def __init__(self, name: Optional[str] = None, metadata: Optional[Dict[str, Any]] = None,
                 root: Optional[str] = None, metric_name: str = "value") -> None:
        self.name = name
        self.metadata = dict(metadata or {})
        self.root = root
        self.metric_name = metric_name

    def __call__(self, study: "optuna.study.Study", trial: "optuna.trial.FrozenTrial") -> None:
        try:
            self._record(study, trial)
        except Exception as exc:  # a tracking problem never stops a study
            from ._run import _warn

            _warn(f"trial {getattr(trial, 'number', '?')} not recorded: {type(exc).__name__}: {exc}")

    def _record(self, study: Any, trial: Any) -> None:
        state = trial.state.name
        info: Dict[str, Any] = {"study": study.study_name, "trial": trial.number, "state": state}
        if trial.datetime_start is not None and trial.datetime_complete is not None:
            info["duration_s"] = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 6)
        if trial.user_attrs:
            info["user_attrs"] = dict(trial.user_attrs)
        metadata = {**self.metadata, **trial.params, "optuna": info}
        result: Dict[str, Any] = {}
        if trial.values is not None:
            values = list(trial.values)
            result = {self.metric_name: values[0]} if len(values) == 1 else {f"{self.metric_name}s": values}

        joined = current()
        if joined is not None:
            joined.log_params(redact(metadata))
            joined.track({"trial": trial.number, **result})
            return
        exp = Experiment(self.name or study.study_name, redact(metadata), root=self.root)
        last = None
        for step, v in sorted(trial.intermediate_values.items()):
            exp.track({"step": step, "intermediate_value": v})
            last = step
        if result:
            exp.track(result if last is None else {"step": last, **result})
        if state == "FAIL":
            message = f"trial {trial.number} of study {study.study_name!r} failed"
            reason = trial.system_attrs.get("fail_reason") if trial.system_attrs else None
            exp.__exit__(FrameworkFailed, FrameworkFailed(f"{message}: {reason}" if reason else message), None)
        else:
            exp.close()
