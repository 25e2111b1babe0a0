"""exprag-plus: a zero-dependency, agent-facing experiment memory.

One JSONL file per run under `.runs/`, the exact code that produced it, and a CLI (`exprag-plus`) to
query, compare, restore and replay runs.
"""

from __future__ import annotations

from importlib import import_module

TYPE_CHECKING = False  # `import typing` alone costs more than the rest of this module
if TYPE_CHECKING:
    from typing import Any

    from .actions import Action, Interaction
    from .experiment import Experiment
    from .schema import TaskSchema
    from .index import load_runs
    from .store import Run, load_run

# Imported on first use: `import exprag_plus` costs next to nothing, and a training script that only
# tracks does not pay for actions, schemas or the query layer.
_LAZY = {"Action": "actions", "Interaction": "actions", "TaskSchema": "schema", "Experiment": "experiment",
         "Run": "store", "load_run": "store", "load_runs": "index"}

__all__ = ["Action", "Experiment", "Interaction", "Run", "TaskSchema", "load_run", "load_runs"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
