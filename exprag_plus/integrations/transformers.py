"""Hugging Face Transformers: `Trainer(..., callbacks=[ExpragCallback()])`.

`report_to` only knows the integrations Transformers ships, so this is a callback. Training arguments
and the model's config become the run's metadata; every `on_log` (training loss, learning rate, the
`eval_*` metrics of `evaluate()`, the final `train_*` figures) is a `track` record with `state.global_step`
as its step. Only the world's process zero writes.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import transformers

from ..experiment import Experiment
from ._run import Recorder

__all__ = ["ExpragCallback"]


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


class ExpragCallback(transformers.TrainerCallback):
    """Records a Trainer's run; joins an Experiment already open in the process instead of starting one."""

    def __init__(self, name: Optional[str] = None, metadata: Optional[Dict[str, Any]] = None,
                 root: Optional[str] = None, experiment: Optional[Experiment] = None) -> None:
        self._rec = Recorder(name or "transformers", metadata, root, experiment)
        self._named = name is not None

    @property
    def experiment(self) -> Optional[Experiment]:
        return self._rec.exp

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        if not self._named and getattr(args, "run_name", None) and args.run_name != args.output_dir:
            self._rec.name = str(args.run_name)
        self._rec.start(_config(args, state, model))

    def on_log(self, args: Any, state: Any, control: Any, logs: Optional[Dict[str, Any]] = None,
               **kwargs: Any) -> None:
        if logs and state.is_world_process_zero:
            self._rec.track(logs, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self._rec.training_done()

    def __getattr__(self, name: str) -> Callable[..., None]:
        # Events added in later Transformers releases reach every callback: they must be harmless here.
        if name.startswith("on_"):
            return _noop
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _config(args: Any, state: Any, model: Any) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    try:
        out["args"] = args.to_sanitized_dict()
    except Exception:
        pass
    config = getattr(model, "config", None)
    try:
        if config is not None:
            out["model"] = config if isinstance(config, dict) else config.to_dict()
    except Exception:
        pass
    if getattr(state, "trial_params", None):
        out["trial_params"] = dict(state.trial_params)
    return out
