"""accelerate: `Accelerator(log_with=[ExpragTracker()])`, then `init_trackers(project, config=...)`.

accelerate calls `start()` before `store_init_configuration(config)`, so the run starts lazily on the
first of configuration or `log()`: the config then becomes the run's metadata. `log(values, step)` writes
`track` records; `end_training()` (`finish`) closes the run. Main process only (`main_process_only`).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from accelerate.tracking import GeneralTracker, on_main_process

from ..experiment import Experiment
from ._run import Recorder

__all__ = ["ExpragTracker"]


class ExpragTracker(GeneralTracker):
    """An accelerate tracker writing one exprag-plus run; joins an Experiment already open in the process."""

    name = "exprag-plus"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, run_name: Optional[str] = None, metadata: Optional[Dict[str, Any]] = None,
                 root: Optional[str] = None, experiment: Optional[Experiment] = None) -> None:
        super().__init__()
        self._rec = Recorder(run_name or "accelerate", metadata, root, experiment)

    @property
    def tracker(self) -> Optional[Experiment]:
        return self._rec.exp

    def start(self) -> None:
        """Nothing yet: the configuration, if any, comes next and belongs in run_start."""

    @on_main_process
    def store_init_configuration(self, values: Dict[str, Any]) -> None:
        if self._rec.active:
            self._rec.params(values)
        else:
            self._rec.start(values)

    @on_main_process
    def log(self, values: Dict[str, Any], step: Optional[int] = None, **kwargs: Any) -> None:
        if not self._rec.active:
            self._rec.start()
        self._rec.track(values, step)

    @on_main_process
    def finish(self) -> None:
        self._rec.end("completed")
