"""Modules loaded on first use: a CLI call pays only for what its command touches.

`lazy("exprag_plus.actions")` returns the module at once; its code runs when an attribute is first read,
once, under a lock: a thread that meets the module while another runs its code waits for it. The
stdlib's LazyLoader (before Python 3.12) let that thread see a half-made module: the MCP server's
concurrent requests failed with "module 'exprag_plus.index' has no attribute 'load'".
"""

from __future__ import annotations

import importlib.util
import sys
import _thread
import types
from types import ModuleType

_LOCK = _thread.RLock()  # one for all: loads are few and short


class _Deferred(types.ModuleType):
    """A module whose code has not run yet (see `lazy`)."""

    def __getattribute__(self, attr: str) -> object:
        with _LOCK:
            if object.__getattribute__(self, "__class__") is _Deferred:
                state = object.__getattribute__(self, "__dict__")
                if state.get("__exprag_loading__"):  # its own code, or an import cycle, on this thread
                    return object.__getattribute__(self, attr)
                state["__exprag_loading__"] = True
                try:
                    state["__spec__"].loader.exec_module(self)
                finally:
                    del state["__exprag_loading__"]
                self.__class__ = types.ModuleType
        return getattr(self, attr)


def lazy(name: str) -> ModuleType:
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _Deferred
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module
