"""exprag-plus: a zero-dependency, agent-facing experiment memory.

One JSONL file per run under `.runs/`, the exact code that produced it, and a CLI (`exprag-plus`) to
query, compare, restore and replay runs.
"""

from .actions import Action, Interaction
from .experiment import Experiment
from .schema import TaskSchema
from .store import Run, load_run, load_runs

__all__ = ["Action", "Experiment", "Interaction", "Run", "TaskSchema", "load_run", "load_runs"]
__version__ = "0.1.0"
