"""Experiment: the only writer of run files.

Every record is one `os.write` of one whole line on an O_APPEND descriptor: nothing is buffered in the
process, so `kill -9` loses nothing `track()` already returned, and a forked child appends whole lines
that never interleave with its parent's. Tracking never raises into the training loop.
"""

from __future__ import annotations

import atexit
import os
import socket
import sys
import threading
import time
import traceback
import warnings
from typing import Any, Dict, Optional

from . import git, ids, records, slurm
from .records import Summary, dumps, to_json

ENV_REPLAY_OF = "EXPRAG_PLUS_REPLAY_OF"
_TRACEBACK_TAIL = 4000


class TrackingWarning(UserWarning):
    """Something went wrong while recording; the run goes on."""


# Strong references: a run whose Experiment the script dropped must still be closed at exit, not lost.
_open: "set[Experiment]" = set()


class Experiment:
    """One run: `Experiment(name, metadata)` writes run_start; `track()` appends; `close()` writes run_end.

    Use it as a context manager, or not: at interpreter exit an open run is closed as `completed`, and an
    uncaught exception closes it as `failed` (`interrupted` for Ctrl-C).
    """

    def __init__(
        self,
        name: str,
        metadata: Optional[Dict[str, Any]] = None,
        root: Optional[str] = None,
        *,
        snapshot: bool = True,
        size_cap: int = 10 * 1024 * 1024,
    ) -> None:
        self._t0 = time.perf_counter()
        self._clock = records.Clock()
        self._lock = threading.Lock()
        self._seq = 0
        self._pid = os.getpid()
        self._child_pid: Optional[int] = None
        self._summary = Summary()
        self._tasks = 0
        self._action_names: "set[str]" = set()
        self._closed = False
        self._warned = False
        self._fd = -1
        self.name = str(name)
        self.metadata = to_json(metadata if metadata is not None else {})
        self.run_id = ids.new_run_id()
        self.root = ids.runs_dir(root)
        ids.ensure_runs_dir(self.root)
        self.path = os.path.join(self.root, self.run_id + ids.SUFFIX)
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise PermissionError(f"exprag-plus: cannot write run files in {self.root}; choose another folder "
                                  "with Experiment(root=...) or $EXPRAG_PLUS_DIR")
        cwd = os.getcwd()
        # The code state first, the file second: a run file is never seen without its run_start.
        state, error = git.capture_state(cwd, self.run_id, self.root, size_cap=size_cap, snapshot=snapshot)
        self.git = state
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        fields: Dict[str, Any] = {
            "format": records.FORMAT,
            "name": self.name,
            "metadata": self.metadata,
            "process": _process_info(cwd),
            "host": _host_info(),
            "git": state,
        }
        if error:
            fields["git_error"] = error
        replay_of = os.environ.get(ENV_REPLAY_OF, "")
        if ids.is_run_id(replay_of):
            fields["replay_of"] = replay_of
        fields.update(slurm.run_start_fields(os.environ))  # scheduler (allowlisted SLURM_*) and sweep
        self._append("run_start", fields)
        _open.add(self)
        _install_hooks()

    # --- writing -----------------------------------------------------------------------------

    def track(self, value: Any, note: Optional[str] = None) -> None:
        """Append a `track` record; returns once the line has reached the OS. Never raises on a value."""
        try:
            try:
                vtext = dumps(value)
            except (TypeError, ValueError, OverflowError, RecursionError):
                plain = to_json(value)
                vtext = dumps(plain)
                value = records.from_json(plain)  # what readers will see, NaN included
            ntext = "null" if note is None else dumps(note if type(note) is str else str(note))
            with self._lock:
                if self._closed:
                    self._warn("track() after close(): value dropped")
                    return
                pid = self._child_pid
                line = '{"type":"track","run_id":"%s","seq":%d,"time":"%s","elapsed_ms":%.3f%s,"value":%s,"note":%s}\n' % (
                    self.run_id, self._seq, self._clock.now(), (time.perf_counter() - self._t0) * 1000.0,
                    "" if pid is None else ',"pid":%d' % pid, vtext, ntext)
                self._seq += 1
                self._summary.add(value)
                self._write(line.encode("utf-8", "surrogatepass"))
        except Exception as exc:  # tracking must never crash a training loop
            self._warn(f"track() failed and was skipped: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Write `run_end` (completed) and fsync; further calls do nothing."""
        self._finish("completed", None)

    def __enter__(self) -> "Experiment":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        status, error = _outcome(exc_type, exc, tb)
        self._finish(status, error)

    @property
    def closed(self) -> bool:
        return self._closed

    def _append(self, rtype: str, fields: Dict[str, Any], final: bool = False) -> Optional[Dict[str, Any]]:
        """Write one non-track record; returns it, or None when it could not be written.

        `final` (run_end) takes the summary and closes the run under the same lock as the write, so a
        track() or close() racing from another thread can neither follow run_end nor write a second one.
        """
        try:
            with self._lock:
                if self._closed:
                    if not final:
                        self._warn(f"{rtype} after close(): record dropped")
                    return None
                if final:
                    self._closed = True
                    fields = dict(fields, summary=self._summary.to_dict())
                record = {"type": rtype, "run_id": self.run_id, "seq": self._seq, "time": self._clock.now(),
                          "elapsed_ms": round((time.perf_counter() - self._t0) * 1000.0, 3)}
                if self._child_pid is not None:
                    record["pid"] = self._child_pid
                record.update(fields)
                line = records.encode(record) + "\n"
                self._seq += 1
                self._write(line.encode("utf-8", "surrogatepass"))
                return record
        except Exception as exc:
            self._warn(f"writing {rtype} failed: {type(exc).__name__}: {exc}")
            return None

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def _finish(self, status: str, error: Optional[Dict[str, Any]]) -> None:
        if self._closed:
            return
        if self._child_pid is not None:
            # A forked child never ends its parent's run; it only lets go of the descriptor.
            self._release()
            return
        self._append("run_end", {"status": status, "error": error}, final=True)
        self._release()

    def _release(self) -> None:
        with self._lock:
            self._closed = True
            fd, self._fd = self._fd, -1
        if fd < 0:
            return
        _open.discard(self)
        try:
            if self._child_pid is None:
                os.fsync(fd)
        except OSError as exc:
            self._warn(f"fsync failed: {exc}")
        try:
            os.close(fd)
        except OSError:
            pass

    def run_task(self, schema: Any, inputs: Optional[Dict[str, Any]] = None, *,
                 timeout: Optional[float] = 600) -> Dict[str, Any]:
        """Run a task schema (a `TaskSchema` or a schema file) and return its outputs.

        The commands run in `<runs folder>/<run_id>/tasks/<n>/`; a `task` record holds the inputs, the
        outputs and every command with its exit code and (truncated) output. A failing command raises
        `TaskFailed` after its record is written; a bad schema or input raises `SchemaError` and runs nothing.
        """
        from .schema import TaskFailed, TaskSchema

        if not isinstance(schema, TaskSchema):
            schema = TaskSchema.from_file(schema)
        schema.resolve_commands(inputs)  # a bad input raises here, before a task number is taken
        with self._lock:
            index = self._tasks
            self._tasks += 1
        workdir = os.path.join(self.root, self.run_id, "tasks", str(index))
        try:
            result = schema.run(inputs, workdir, timeout=timeout)
        except TaskFailed as exc:
            self._append("task", {"index": index, "workdir": workdir, **exc.result.to_record()})
            raise
        self._append("task", {"index": index, "workdir": workdir, **result.to_record()})
        return result.outputs

    def add_action(self, action: Any, name: Optional[str] = None) -> str:
        """Register a post-run action (an `exprag_plus.Action` instance) under `name` (default: its class name).

        Appends an `action` record (name, class as module:QualName, params, description); returns the name.
        Refuses a non-Action (TypeError), a duplicate name in this run, a class defined inside a function
        or in a file-less `__main__`, and parameters that cannot be stored as JSON (ValueError).
        Run it later with `exprag-plus actions run RUN NAME` or `load_run(...).run_action(NAME, ...)`.
        """
        from .actions import action_fields

        fields = action_fields(action, name)
        with self._lock:
            names = self._action_names
            if fields["name"] in names:
                raise ValueError(f"this run already has an action named {fields['name']!r}: "
                                 "give the second one another name (add_action(action, name=...))")
            names.add(fields["name"])
            closed = self._closed
        if closed:  # the run has ended: append after the fact, as action_run records are
            append_record(self.path, "action", fields)
        else:
            self._append("action", fields)
        return fields["name"]

    def summary(self) -> Dict[str, Dict[str, Any]]:
        """Per metric path: last, min, max, count, nonfinite (and steps): what run_end.summary will hold."""
        with self._lock:
            return self._summary.to_dict()

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(f"exprag-plus: {message}", TrackingWarning, stacklevel=3)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._child_pid = os.getpid()

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, run_id={self.run_id!r}, path={self.path!r})"


def _outcome(exc_type: Any, exc: Any, tb: Any) -> "tuple[str, Optional[Dict[str, Any]]]":
    if exc_type is None:
        return "completed", None
    if issubclass(exc_type, SystemExit) and exc is not None and exc.code in (None, 0):
        return "completed", None
    status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
    tail = "".join(traceback.format_exception(exc_type, exc, tb))[-_TRACEBACK_TAIL:]
    return status, {"type": exc_type.__qualname__, "message": str(exc), "traceback": tail}


def _process_info(cwd: str) -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "pid": os.getpid(),
        "argv": records.redact_argv(list(sys.argv)),
        "cwd": cwd,
        "executable": sys.executable,
        "python": "%d.%d.%d" % sys.version_info[:3],
    }
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None) and spec.name != "__main__":
        info["module"] = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
    return info


def _host_info() -> Dict[str, Any]:
    u = os.uname() if hasattr(os, "uname") else None
    plat = f"{u.sysname}-{u.release}-{u.machine}" if u else sys.platform
    return {"hostname": socket.gethostname(), "platform": plat}


# --- process-wide hooks ----------------------------------------------------------------------------

_hooks_installed = False


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_close_all_at_exit)
    previous = sys.excepthook

    def excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
        status, error = _outcome(exc_type, exc, tb)
        for exp in list(_open):
            exp._finish(status, error)
        previous(exc_type, exc, tb)

    sys.excepthook = excepthook
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork)


def _after_fork() -> None:
    for exp in list(_open):
        exp._after_fork_in_child()


def _close_all_at_exit() -> None:
    for exp in list(_open):
        exp._finish("completed", None)


def append_record(path: str, rtype: str, fields: Dict[str, Any]) -> Dict[str, Any]:
    """Append a record to a run file after the fact (an `action_run`, say).

    `seq` continues from the file's last record and `elapsed_ms` counts from run_start's time, so readers
    see one ordered history. An exclusive lock keeps two such writers from taking the same seq.
    """
    from . import store  # reading the tail is the reader's job

    fd = os.open(path, os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        start, last_seq = store.start_and_last_seq(path)
        run_id = (start or {}).get("run_id") or os.path.basename(path)[: -len(ids.SUFFIX)]
        started = records.parse_time((start or {}).get("time", ""))
        now = time.time()
        record = {"type": rtype, "run_id": run_id, "seq": last_seq + 1, "time": records.Clock().now(),
                  "elapsed_ms": round((now - started) * 1000.0, 3) if started is not None else None,
                  "pid": os.getpid()}
        record.update(fields)
        data = (records.encode(record) + "\n").encode("utf-8", "surrogatepass")
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # end a torn last line so this record stays whole
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        return record
    finally:
        os.close(fd)
