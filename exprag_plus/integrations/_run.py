"""The run an integration writes to: an open Experiment it joins, or one it starts and ends.

Frameworks report the end of training before the metrics that often matter most (`trainer.evaluate()`,
`trainer.test()` after `fit`), so a run this module started stays open after training ends ("done") and
is closed as completed when the next training starts or the process exits. A run whose training began
but never reported its end is closed as failed at exit: the framework raised, or the process left early.
"""

from __future__ import annotations

import atexit
import sys
import warnings
from typing import Any, Dict, Mapping, Optional

from ..experiment import Experiment, TrackingWarning, current
from ..redact import REDACTED, is_secret_name, redact_text

# Started here, training finished, still open for late metrics.
_done: "set[Experiment]" = set()
# Started here and training has not reported its end.
_training: "set[Experiment]" = set()
_atexit_installed = False


class Unfinished(Exception):
    """The process ended while the framework had not reported the end of training."""


class FrameworkFailed(Exception):
    """The framework reported a failed run without handing over the exception."""


def redact(value: Any, key: str = "") -> Any:
    """A config with credential-looking values hidden (by key name, or by the shape of the value)."""
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, key) for v in value]
    if isinstance(value, str) and value:
        if key and is_secret_name(key):
            return REDACTED
        return redact_text(value)
    return value


def _warn(message: str) -> None:
    warnings.warn(f"exprag-plus: {message}", TrackingWarning, stacklevel=3)


def _close_unfinished_at_exit() -> None:
    for exp in list(_training):
        try:
            exp.__exit__(Unfinished, Unfinished("the process ended before the framework reported the end of "
                                                "training (it raised, or the script left early)"), None)
        except Exception:
            pass
    _training.clear()
    for exp in list(_done):
        exp.close()
    _done.clear()


def close_finished() -> None:
    """End (completed) the runs whose training finished: a new training is starting."""
    for exp in list(_done):
        exp.close()
    _done.clear()


class Recorder:
    """One integration's run. Every method swallows its own errors: tracking never breaks training."""

    def __init__(self, name: str, metadata: Optional[Dict[str, Any]] = None, root: Optional[str] = None,
                 experiment: Optional[Experiment] = None) -> None:
        self.name = name
        self.metadata = dict(metadata or {})
        self.root = root
        self.given = experiment
        self.exp: Optional[Experiment] = None
        self.owned = False

    @property
    def active(self) -> bool:
        return self.exp is not None and not self.exp.closed

    def start(self, config: Optional[Mapping[str, Any]] = None, *, new_training: bool = True) -> Optional[Experiment]:
        """The run to write to, joined or started; `config` becomes its metadata (or a params record)."""
        try:
            config = redact(dict(config)) if config else {}
            if self.active:
                if config:
                    self.exp.log_params(config)
                if new_training and self.owned:
                    _done.discard(self.exp)
                    _training.add(self.exp)
                return self.exp
            if new_training:
                close_finished()
            joined = self.given if self.given is not None and not self.given.closed else current()
            if joined is not None:
                self.exp, self.owned = joined, False
                meta = {**self.metadata, **config}
                if meta:
                    joined.log_params(meta)
                return joined
            self.exp = Experiment(self.name, {**self.metadata, **config}, root=self.root)
            self.owned = True
            _install_atexit()
            (_training if new_training else _done).add(self.exp)
            return self.exp
        except Exception as exc:
            _warn(f"could not start a run ({type(exc).__name__}: {exc}); nothing is recorded")
            self.exp = None
            return None

    def params(self, config: Mapping[str, Any]) -> None:
        if self.active:
            try:
                self.exp.log_params(redact(dict(config)))
            except Exception as exc:
                _warn(f"params skipped: {type(exc).__name__}: {exc}")
        else:
            self.start(config, new_training=False)

    def track(self, metrics: Mapping[str, Any], step: Any = None) -> None:
        exp = self.exp if self.active else self.start(new_training=False)
        if exp is None:
            return
        value = dict(metrics)
        if step is not None:
            value = {"step": step, **{k: v for k, v in value.items() if k != "step"}}
        exp.track(value)

    def training_done(self) -> None:
        """Training ended normally: the run stays open for late metrics, then ends completed."""
        if self.active and self.owned:
            _training.discard(self.exp)
            _done.add(self.exp)

    def end(self, status: str = "completed", exc_info: Any = None) -> None:
        """End a run this recorder started; a joined run belongs to whoever opened it."""
        if not self.active or not self.owned:
            return
        exp = self.exp
        _training.discard(exp)
        _done.discard(exp)
        try:
            if status == "completed":
                exp.close()
                return
            etype, exc, tb = exc_info if exc_info and exc_info[0] is not None else (None, None, None)
            if etype is None:
                etype = KeyboardInterrupt if status == "interrupted" else FrameworkFailed
                exc = etype(f"the framework reported status {status!r}")
            exp.__exit__(etype, exc, tb)
        except Exception as exc:
            _warn(f"could not end the run: {type(exc).__name__}: {exc}")


def _install_atexit() -> None:
    # Registered after the Experiment's own exit hook, so it runs first (atexit is last in, first out).
    global _atexit_installed
    if not _atexit_installed:
        _atexit_installed = True
        atexit.register(_close_unfinished_at_exit)


def exc_info_now() -> Any:
    """The exception being handled, when a framework reports failure from inside its except block."""
    info = sys.exc_info()
    return info if info[0] is not None else None
