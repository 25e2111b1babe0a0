"""Experiment: the writer that owns a run.

Every record is one whole line written through the appender: nothing is buffered in the process, so
`kill -9` loses nothing `track()` already returned, and a forked child appends whole lines that never
interleave with its parent's. Tracking never raises into the training loop, and a signal handler that
tracks or closes while the interrupted code is itself writing does not deadlock: records are queued and
the outer write drains the queue in order.
"""

from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time
import warnings
from typing import Any, Deque, Dict, List, Optional, Tuple

from . import artifacts, git, ids, records, slurm, store
from .appender import LineWriter, append_record, encode_line, new_run_guard
from .records import Summary, dumps, to_json
from .redact import has_secret_key, redact_mapping, redact_text, secret_values

__all__ = ["Experiment", "TrackingWarning", "append_record", "current"]

ENV_REPLAY_OF = "EXPRAG_PLUS_REPLAY_OF"
# Set by `exprag-plus run`: the run file that the first Experiment of the wrapped command joins.
ENV_RUN = "EXPRAG_PLUS_RUN"
JOINED_MARK = "joined"
_TRACEBACK_TAIL = 4000
_DELETED_CHECK_S = 1.0


class TrackingWarning(UserWarning):
    """Something went wrong while recording; the run goes on."""


# Strong references: a run whose Experiment the script dropped must still be closed at exit, not lost.
_open: "set[Experiment]" = set()


class Experiment:
    """One run: `Experiment(name, metadata)` writes run_start; `track()` appends; `close()` writes run_end.

    Use it as a context manager, or not: at interpreter exit an open run is closed as `completed`, and an
    uncaught exception closes it as `failed` (`interrupted` for Ctrl-C). `resume=RUN` continues an
    existing run (same id, seq continuing, a `resume` record; the summary covers every attempt).
    """

    def __init__(
        self,
        name: str,
        metadata: Optional[Dict[str, Any]] = None,
        root: Optional[str] = None,
        *,
        snapshot: bool = True,
        size_cap: int = 10 * 1024 * 1024,
        resume: Optional[str] = None,
        _start_fields: Optional[Dict[str, Any]] = None,
    ) -> None:
        new_run_guard()
        self._t0 = time.perf_counter()
        self._clock = records.Clock()
        self._lock = threading.RLock()
        self._pending: Deque[Tuple[str, Any]] = collections.deque()
        self._draining = False
        self._seq = 0
        self._pid = os.getpid()
        self._child_pid: Optional[int] = None
        self._summary = Summary()
        self._counts: Dict[str, int] = {}  # records written by this object, per type (run_end says them)
        self._offsets: Dict[str, List[int]] = {}  # where this object's notes, tags and artifacts start
        self._tasks = 0
        self._action_names: "set[str]" = set()
        self._closed = False
        self._warned: "set[str]" = set()
        self._writer: Optional[LineWriter] = None
        self._next_check = 0.0
        self._base_size = 0
        self.joined = False
        self._recount = False
        self._start_metadata: Any = None
        self.name = str(name)
        self.metadata = to_json(metadata if metadata is not None else {})
        self.root = ids.runs_dir(root)
        ids.ensure_runs_dir(self.root)
        cwd = os.getcwd()
        target = _join_target() if resume is None else None
        if target is None and resume is None:
            resume = slurm.requeued_run(self.root, self.name, os.environ)  # a requeued Slurm job continues its run
        if target is not None:
            self._join(target, cwd)
        elif resume is not None:
            self._resume(resume, cwd)
        else:
            self._start(cwd, snapshot, size_cap, _start_fields or {})
        _open.add(self)
        _install_hooks()

    def _start(self, cwd: str, snapshot: bool, size_cap: int, extra: Dict[str, Any]) -> None:
        self.run_id = ids.new_run_id()
        self.path = os.path.join(self.root, self.run_id + ids.SUFFIX)
        # The code state first, the file second: a run file is never seen without its run_start.
        state, error = git.capture_state(cwd, self.run_id, self.root, size_cap=size_cap, snapshot=snapshot)
        self.git = state
        self._writer = LineWriter.open(self.path, create=True)
        self._base_size = 0
        fields: Dict[str, Any] = {
            "format": records.FORMAT,
            "name": self.name,
            "metadata": redact_mapping(self.metadata),
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
        fields.update(extra)
        self._start_metadata = fields["metadata"]
        self._append("run_start", fields)

    def _resume(self, ref: str, cwd: str) -> None:
        """Continue a run: its tracks so far feed the summary, its seq continues, a `resume` record says so."""
        self.path = ids.resolve(str(ref), self.root)
        run = store.Run.read(self.path, full=True)
        if not run.start:
            raise ValueError(f"cannot resume {ref!r}: {self.path} has no run_start record")
        self.run_id = run.run_id
        self.git = run.git
        for rec in run.records:
            if rec.get("type") == "track":
                self._summary.add(records.from_json(rec.get("value")))
        self._seq = max([0] + [r["seq"] + 1 for r in run.records if isinstance(r.get("seq"), int)])
        started = records.parse_time(str(run.start.get("time", "")))
        if started is not None:
            self._t0 -= max(0.0, time.time() - started)
        self._writer = LineWriter.open(self.path)
        self._base_size = os.fstat(self._writer.fd).st_size
        fields: Dict[str, Any] = {"name": self.name, "process": _process_info(cwd), "host": _host_info(),
                                  "previous_status": run.status}
        if self.metadata:
            fields["metadata"] = redact_mapping(self.metadata)
        fields.update(slurm.resume_fields(os.environ))  # restart_count and scheduler under Slurm
        self._append("resume", fields)

    def _join(self, path: str, cwd: str) -> None:
        """Record into the run of the `exprag-plus run` wrapper around this process: one experiment, one run.

        The wrapper owns the run (it writes run_end with the exit code); this process adds a `join` record
        with its name and metadata, then its tracks, each carrying its pid.
        """
        start, last_seq = store.start_and_last_seq(path)
        self.path = path
        self.root = os.path.dirname(path)
        self.run_id = str((start or {}).get("run_id") or os.path.basename(path)[: -len(ids.SUFFIX)])
        self.git = (start or {}).get("git")
        self.joined = True
        self._child_pid = os.getpid()
        self._seq = last_seq + 1
        started = records.parse_time(str((start or {}).get("time", "")))
        if started is not None:
            self._t0 -= max(0.0, time.time() - started)
        self._writer = LineWriter.open(path)
        self._base_size = os.fstat(self._writer.fd).st_size
        try:
            folder = os.path.join(self.root, self.run_id)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, JOINED_MARK), "w", encoding="utf-8") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
        self._append("join", {"name": self.name, "metadata": redact_mapping(self.metadata),
                              "process": _process_info(cwd)})

    # --- writing -----------------------------------------------------------------------------

    def track(self, value: Any, note: Optional[str] = None) -> None:
        """Append a `track` record; returns once the line has reached the OS. Never raises on a value."""
        try:
            if type(value) is dict and has_secret_key(value):
                value = redact_mapping(value)
            try:
                vtext = dumps(value)
            except (TypeError, ValueError, OverflowError, RecursionError):
                plain = to_json(value)
                vtext = dumps(plain)
                value = records.from_json(plain)  # what readers will see, NaN included
            ntext = "null" if note is None else dumps(note if type(note) is str else str(note))
            self._submit("track", (vtext, ntext, value))
        except Exception as exc:  # tracking must never crash a training loop
            self._warn(f"track() failed and was skipped: {type(exc).__name__}: {exc}")

    def note(self, text: str, kind: Optional[str] = None) -> None:
        """Append a `note` record: why this run exists, what was seen, what was decided."""
        self._append("note", {"text": redact_text(str(text)), "kind": None if kind is None else str(kind)})

    def tag(self, *add: str, remove: Any = ()) -> None:
        """Append a `tag` record; a run's tags are the fold of its tag records in file order."""
        rm = [remove] if isinstance(remove, str) else list(remove)
        self._append("tag", {"add": [redact_text(str(t)) for t in add], "remove": [redact_text(str(t)) for t in rm]})

    def artifact(self, path: Any, kind: Optional[str] = None, note: Optional[str] = None, *,
                 hash_limit: int = artifacts.HASH_LIMIT) -> Optional[Dict[str, Any]]:
        """Record a file this run wrote (a checkpoint, predictions, a plot): an `artifact` record with its
        path (relative to the git top level when inside it), bytes, mtime, sha256 (files up to
        `hash_limit` bytes; larger ones are identified by size and mtime), kind (guessed from the
        extension when not given) and note. A folder records each file in it (up to 1000). Returns the
        fields of the last record written, or None. Never raises: a missing file is a warning.
        """
        try:
            target = os.fspath(path)
            top = (self.git or {}).get("toplevel") if isinstance(self.git, dict) else None
            if os.path.isdir(target):
                files = sorted(p for p in artifacts.walk_files(target))[: artifacts.MAX_RECORDED]
                if not files:
                    self._warn(f"artifact({target!r}): the folder holds no file; nothing recorded",
                               key="artifact:" + target)
                    return None
            else:
                files = [target]
            fields = None
            for f in files:
                fields = artifacts.describe(f, kind=kind, note=note, hash_limit=hash_limit, toplevel=top)
                if self._closed:  # saved after the run ended: appended after the fact, as actions are
                    append_record(self.path, "artifact", fields)
                else:
                    self._append("artifact", fields)
            return fields
        except OSError as exc:
            self._warn(f"artifact({os.fspath(path)!r}) was not recorded: {exc.strerror or exc}",
                       key=f"artifact:{os.fspath(path)}")
        except Exception as exc:  # recording must never crash a training loop
            self._warn(f"artifact() failed and was skipped: {type(exc).__name__}: {exc}", key="artifact")
        return None

    def close(self) -> None:
        """Write `run_end` (completed) and fsync; further calls do nothing."""
        self._finish("completed", None)

    def end(self, status: str, error: Optional[Dict[str, Any]] = None, **fields: Any) -> None:
        """Write `run_end` with this status and extra fields (the `run` wrapper's exit code and output)."""
        self._finish(status, error, fields)

    def __enter__(self) -> "Experiment":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        status, error = _outcome(exc_type, exc, tb)
        self._finish(status, error)

    @property
    def closed(self) -> bool:
        return self._closed

    def _append(self, rtype: str, fields: Dict[str, Any]) -> None:
        """Queue one non-track record and write it (now, or when the interrupted write on this thread ends)."""
        try:
            self._submit(rtype, fields)
        except Exception as exc:
            self._warn(f"writing {rtype} failed: {type(exc).__name__}: {exc}")

    def _submit(self, rtype: str, payload: Any) -> None:
        """Queue a record; the outermost writer on this thread writes the queue in order.

        A signal handler runs on the main thread between two bytecodes, possibly inside a write: its
        records wait in the queue instead of taking a lock this thread already holds.
        """
        with self._lock:
            if self._closed:
                if rtype != "run_end":
                    self._warn(f"{'track()' if rtype == 'track' else rtype} after close(): record dropped")
                return
            self._pending.append((rtype, payload))
            if not self._draining:
                self._drain()

    def _drain(self) -> None:
        raised: Optional[BaseException] = None
        while self._pending and not self._closed:
            self._draining = True
            try:
                while self._pending and not self._closed:
                    self._write_one(*self._pending.popleft())
            except BaseException as exc:  # a signal handler raised through a write: finish the queue first
                raised = raised or exc
                self._recount = True
            finally:
                self._draining = False
        if self._closed:
            self._pending.clear()
        if raised is not None:
            raise raised

    def _write_one(self, rtype: str, payload: Any) -> None:
        seq = self._seq
        self._seq += 1
        elapsed = (time.perf_counter() - self._t0) * 1000.0
        pid = self._child_pid
        if rtype == "track":
            vtext, ntext, value = payload
            line = ('{"type":"track","run_id":"%s","seq":%d,"time":"%s","elapsed_ms":%.3f%s,"value":%s,"note":%s}\n' % (
                self.run_id, seq, self._clock.now(), elapsed, "" if pid is None else ',"pid":%d' % pid,
                vtext, ntext)).encode("utf-8", "surrogatepass")
        else:
            if rtype == "run_end":
                self._closed = True
                summary, counts, offsets = self._final_counts()
                counts["run_end"] = counts.get("run_end", 0) + 1
                payload = dict(payload, summary=summary, records=counts)
                at = {t: v for t, v in offsets.items() if 0 < len(v) == counts.get(t) and len(v) <= store.OFFSETS_CAP}
                if at:
                    payload["offsets"] = at
            record = {"type": rtype, "run_id": self.run_id, "seq": seq, "time": self._clock.now(),
                      "elapsed_ms": round(elapsed, 3)}
            if pid is not None:
                record["pid"] = pid
            record.update(payload)
            line = encode_line(record)
        writer = self._writer
        before = writer.written if writer is not None else 0
        at = before + 1 if writer is not None and writer.torn else before
        try:
            if writer is None:
                raise OSError("the run file is closed")
            writer.write(line)
        except OSError as exc:
            self._warn(f"{'track()' if rtype == 'track' else 'writing ' + rtype} failed and was skipped: {exc}")
            return
        finally:
            # counted once written, even when a signal handler raised through the write
            if writer is not None and writer.written > before and not writer.torn:
                self._counts[rtype] = self._counts.get(rtype, 0) + 1
                if rtype in store.OFFSET_TYPES:
                    self._offsets.setdefault(rtype, []).append(at)
                if rtype == "track":
                    self._summary.add(payload[2])
            if rtype == "run_end":
                self._release()
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + _DELETED_CHECK_S
            self._check_file()

    def _check_file(self) -> None:
        writer = self._writer
        try:
            gone = writer is not None and os.fstat(writer.fd).st_nlink == 0
        except OSError:
            gone = False
        if gone:
            self._warn(f"the run file {self.path} was deleted while the run was going on; "
                       "records written since go nowhere", key="deleted")

    def _final_counts(self) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, int], Dict[str, List[int]]]:
        """The summary of what the file holds, its records per type and where its notes, tags and artifacts
        start (so readers need not read the body): re-read when another process (a forked child) wrote to
        it, when the file held records before this object (resumed, joined), or when an exception from a
        signal handler cut a write short."""
        writer = self._writer
        try:
            foreign = writer is not None and os.fstat(writer.fd).st_size != self._base_size + writer.written
        except OSError:
            foreign = False
        if foreign or self._recount or self._base_size:
            try:
                acc = Summary()
                counts: Dict[str, int] = {}
                offsets: Dict[str, List[int]] = {}
                for lineno, line, last, offset in store.line_offsets(self.path):
                    rec = store.parse_line(line, self.path, lineno, last)
                    if rec is None:
                        continue
                    t = rec.get("type")
                    counts[t] = counts.get(t, 0) + 1
                    if t == "track":
                        acc.add(records.from_json(rec.get("value")))
                    elif t in store.OFFSET_TYPES:
                        offsets.setdefault(t, []).append(offset)
                return (acc.to_dict() if foreign or self._recount else self._summary.to_dict()), counts, offsets
            except (OSError, ValueError):
                pass
        return self._summary.to_dict(), dict(self._counts), {t: list(v) for t, v in self._offsets.items()}

    def _finish(self, status: str, error: Optional[Dict[str, Any]], extra: Optional[Dict[str, Any]] = None) -> None:
        if self._closed:
            return
        if isinstance(error, dict):  # an exception's text may quote a token, a password, a header
            error = {k: redact_text(v) if isinstance(v, str) else v for k, v in error.items()}
        if self.joined and os.getpid() == self._child_pid:
            # The wrapper ends the run; a joined process says how it ended, then lets go.
            self._append("join_end", {"status": status, "error": error})
        if self._child_pid is not None:
            # A forked child never ends its parent's run; it only lets go of the descriptor.
            with self._lock:
                self._closed = True
            self._release()
            return
        self._check_file()
        fields: Dict[str, Any] = {"status": status, "error": error}
        final = redact_mapping(self.metadata)
        if self._start_metadata is not None and final != self._start_metadata:
            fields["metadata"] = final  # what arrived after run_start (log_params), for readers of the tail
        fields.update(extra or {})
        self._append("run_end", fields)

    def _release(self) -> None:
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is None:
            return
        _open.discard(self)
        try:
            writer.close(sync=self._child_pid is None)
        except OSError as exc:
            self._warn(f"fsync failed: {exc}")

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
            exc.args = (redact_text(str(exc), secret_values(exc.result.inputs)),)  # it may end up in run_end
            raise
        self._append("task", {"index": index, "workdir": workdir, **result.to_record()})
        return result.outputs

    def add_action(self, action: Any, name: Optional[str] = None) -> str:
        """Register a post-run action (an `exprag_plus.Action` instance) under `name` (default: its class name).

        Appends an `action` record (name, class as module:QualName, params, description); returns the name.
        Refuses a non-Action (TypeError), a duplicate name in this run, a class defined inside a function
        or in a file-less `__main__`, and parameters that cannot be stored as JSON (ValueError).
        Run it later with `exprag-plus actions run RUN NAME` or `actions.run_action(load_run(...), NAME, ...)`.
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
        """Per metric path: last, min, max, count, nonfinite (and steps) of what this process wrote."""
        with self._lock:
            return self._summary.to_dict()

    def _warn(self, message: str, key: str = "write") -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"exprag-plus: {message}", TrackingWarning, stacklevel=3)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.RLock()
        self._pending = collections.deque()
        self._draining = False
        self._child_pid = os.getpid()

    def __repr__(self) -> str:
        return f"Experiment({self.name!r}, run_id={self.run_id!r}, path={self.path!r})"

    # --- framework integrations (exprag_plus.integrations) -----------------------------------

    def log_params(self, params: Dict[str, Any]) -> None:
        """Hyperparameters that arrive after run_start: a `params` record, and `self.metadata` updated.

        Never raises: a framework hands over whatever its config holds.
        """
        try:
            plain = to_json(dict(params))
            if not isinstance(plain, dict):
                return
            self._append("params", {"params": redact_mapping(plain)})
            if isinstance(self.metadata, dict):
                self.metadata.update(plain)
        except Exception as exc:  # tracking must never crash a training loop
            self._warn(f"log_params() failed and was skipped: {type(exc).__name__}: {exc}")


def _join_target() -> Optional[str]:
    """The wrapper's run file, taken once: later Experiments and child processes start their own runs."""
    path = os.environ.pop(ENV_RUN, "")
    if not path:
        return None
    if not (path.endswith(ids.SUFFIX) and os.path.isfile(path)):
        warnings.warn(f"exprag-plus: ${ENV_RUN} names no run file ({path!r}); starting a run of its own",
                      TrackingWarning, stacklevel=3)
        return None
    return os.path.abspath(path)


def current() -> Optional[Experiment]:
    """The most recently started run of this process that is still open, if any."""
    me = os.getpid()
    live = [e for e in list(_open) if not e._closed and (e._child_pid is None or (e.joined and e._child_pid == me))]
    return max(live, key=lambda e: e._t0) if live else None


def _outcome(exc_type: Any, exc: Any, tb: Any) -> "tuple[str, Optional[Dict[str, Any]]]":
    if exc_type is None:
        return "completed", None
    if issubclass(exc_type, SystemExit) and exc is not None and exc.code in (None, 0):
        return "completed", None
    status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
    import traceback

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
    return {"hostname": store.host_name(), "platform": plat}


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
