"""`exprag-plus mcp`: the run memory as Model Context Protocol tools, over stdio, standard library only.

Transport: newline-delimited JSON-RPC 2.0 on stdin/stdout. Only protocol messages reach stdout: while
serving, file descriptor 1 is pointed at stderr (so a print, a library warning or a child process writes
there) and the messages go to a private duplicate of the real stdout, one whole line at a time under a
lock. Standard input is likewise moved to a private duplicate and fd 0 reads /dev/null, so nothing the
tools run can consume protocol input. The server exits 0 when stdin closes (in-flight calls get
`SHUTDOWN_GRACE_S` to finish). `tools/call` runs on a small pool of worker threads; everything else,
`ping` included, is answered on the reading thread, so a slow call never delays it.

Protocol generations, decided per request (a dual-era server; the 2026-07-28 spec lets one process serve
both eras):
- A request whose `params._meta` holds `io.modelcontextprotocol/protocolVersion` is served statelessly at
  that version. It must also carry `io.modelcontextprotocol/clientCapabilities` (an object), else -32602.
  A version this server does not speak gets -32022 with `data = {"supported": [...], "requested": v}`,
  `supported` naming every version it speaks, newest first (handshake ones included, so a dual-era
  client that lacks 2026-07-28 knows it can fall back to `initialize`).
- Anything else is the handshake generation: `initialize` negotiates one of 2024-11-05, 2025-03-26,
  2025-06-18, 2025-11-25 (an unknown requested version is answered with 2025-11-25, the latest). A
  request before `initialize` is answered anyway, as 2025-11-25 (lenient: the tools hold no session).
- `server/discover` (2026-07-28) answers `supportedVersions`, `capabilities`, `instructions`, `ttlMs`,
  `cacheScope`; every 2026-07-28 result carries `resultType: "complete"` and the server's identity in
  `_meta["io.modelcontextprotocol/serverInfo"]`; `tools/list` carries `ttlMs`/`cacheScope` there too.
- Features a version lacks are left out for it: 2024-11-05 has no tool annotations, 2025-03-26 adds
  them, 2025-06-18 adds `title`, `outputSchema` and `structuredContent`.

Errors: bad tool arguments, an unknown run, metric or action, a missing answer, and every QueryError/
NoResult/RunNotFound/CodeStateError/GitError/Action*/ValueError/OSError of the library are tool results with
`isError: true` and a one-line reason; an unknown tool is -32602, an unknown method -32601, a line that is not JSON -32700
(id null), a message that is not a request -32600. Notifications never get a response. The server
never dies on bad input.

The tools are a table (`TOOLS`: name -> schema and a function over query/codestate/actions/schema), the
same library calls the CLI makes; outputs are bounded by default like the CLI's.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import queue
import re
import subprocess
import sys
import threading
import traceback
import types
import warnings
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Sequence, Set, Tuple, Type

from . import __version__, actions, artifacts, codestate, git, ids, index, memory, progress, query, records, store

PROG = "exprag-plus mcp"
SERVER_NAME = "exprag-plus"
SERVER_TITLE = "exprag-plus experiment memory"

HANDSHAKE_VERSIONS: Tuple[str, ...] = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS: Tuple[str, ...] = ("2026-07-28",)
KNOWN_VERSIONS: Tuple[str, ...] = HANDSHAKE_VERSIONS + MODERN_VERSIONS  # oldest to newest
SUPPORTED_VERSIONS: Tuple[str, ...] = tuple(reversed(KNOWN_VERSIONS))  # newest first, as advertised
LATEST_HANDSHAKE_VERSION = HANDSHAKE_VERSIONS[-1]
LATEST_MODERN_VERSION = MODERN_VERSIONS[-1]

META_PROTOCOL_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CLIENT_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
UNSUPPORTED_PROTOCOL_VERSION = -32022

TOOLS_LIST_TTL_MS = 300_000  # the tool list is fixed for the life of the process
WORKERS = 4
SHUTDOWN_GRACE_S = 2.0
MAX_REASON = 1000
MAX_ACTION_RESULT = 20_000  # characters of JSON that run_action returns of an action's result

INSTRUCTIONS = (
    "Experiment memory of this repository: runs recorded with exprag_plus.Experiment (metadata, tracked "
    "metrics, the exact code). Discover names with `keys`, list with `list_runs`, rank with `best_run`, "
    "read curves with `metric_history`, see what changed with `compare_runs` and `code_diff`, get a run's "
    "code in a new git worktree with `restore_run`, find the files a run wrote (its model) with "
    "`list_artifacts`, run the post-run actions a run registered with "
    "`list_actions` and `run_action`, read task schemas with `task_info`. Runs are referenced by id, "
    "unique prefix or suffix (>= 6 characters), `latest` or `latest~N`."
)


def at_least(version: str, minimum: str) -> bool:
    """Whether a known protocol version is at least `minimum` (unknown versions: False)."""
    return version in KNOWN_VERSIONS and KNOWN_VERSIONS.index(version) >= KNOWN_VERSIONS.index(minimum)


def log(text: str) -> None:
    try:
        sys.stderr.write(f"{PROG}: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def one_line(text: Any, limit: int = MAX_REASON) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


# --- argument checking (the JSON Schema subset the input schemas use) --------------------------------


class ArgumentError(ValueError):
    """A tool argument that does not fit the tool's input schema."""


class ToolFailure(RuntimeError):
    """A call that was understood but did not succeed; the message is the reason (an `isError` result)."""


_TYPE_WORDS = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean",
               "array": "an array", "object": "an object", "null": "null"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _fits(value: Any, typ: str) -> bool:
    k = _kind(value)
    if typ == "number":
        return k in ("integer", "number")
    if typ == "integer":
        return k == "integer" or (k == "number" and float(value).is_integer())
    return k == typ


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if _kind(value) in _TYPE_WORDS else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_value(where: str, value: Any, schema: Dict[str, Any]) -> Any:
    """`value` checked against `schema` (type, items, enum, minimum, properties); returns it normalized."""
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else list(types)
        match = next((t for t in allowed if _fits(value, t)), None)
        if match is None:
            want = " or ".join(_TYPE_WORDS.get(t, t) for t in allowed)
            raise ArgumentError(f"{where} must be {want}, got {_TYPE_WORDS.get(_kind(value), _kind(value))} "
                                f"({_shown(value)})")
        if match == "integer" and isinstance(value, float):
            value = int(value)
    if "enum" in schema and value not in schema["enum"]:
        raise ArgumentError(f"{where} must be one of {', '.join(json.dumps(e) for e in schema['enum'])}, "
                            f"got {_shown(value)}")
    if "minimum" in schema and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and value < schema["minimum"]:
        raise ArgumentError(f"{where} must be >= {schema['minimum']}, got {_shown(value)}")
    if "maximum" in schema and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and value > schema["maximum"]:
        raise ArgumentError(f"{where} must be <= {schema['maximum']}, got {_shown(value)}")
    if isinstance(value, list) and "items" in schema:
        value = [check_value(f"{where}[{i}]", v, schema["items"]) for i, v in enumerate(value)]
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        value = {k: check_value(f"{where}.{k}", v, schema["additionalProperties"]) for k, v in value.items()}
    return value


# --- the tools ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    """One MCP tool: its schemas and annotations, and the library call behind it."""

    name: str
    title: str
    description: str
    params: Dict[str, Dict[str, Any]]
    required: Tuple[str, ...]
    output: Dict[str, Any]
    fn: Callable[["Server", Dict[str, Any]], Dict[str, Any]]
    read_only: bool = True
    destructive: bool = False
    idempotent: bool = True

    def input_schema(self) -> Dict[str, Any]:
        schema: Dict[str, Any] = {"type": "object", "properties": copy.deepcopy(self.params),
                                  "additionalProperties": False}
        if self.required:
            schema["required"] = list(self.required)
        return schema

    def annotations(self) -> Dict[str, Any]:
        return {"title": self.title, "readOnlyHint": self.read_only, "destructiveHint": self.destructive,
                "idempotentHint": self.idempotent, "openWorldHint": False}

    def describe(self, version: str) -> Dict[str, Any]:
        """The tools/list entry, with only what `version` defines."""
        d: Dict[str, Any] = {"name": self.name}
        if at_least(version, "2025-06-18"):
            d["title"] = self.title
        d["description"] = self.description
        d["inputSchema"] = self.input_schema()
        if at_least(version, "2025-06-18"):
            d["outputSchema"] = copy.deepcopy(self.output)
        if at_least(version, "2025-03-26"):
            d["annotations"] = self.annotations()
        return d

    def arguments(self, args: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """Arguments checked against the input schema, defaults filled; null counts as absent."""
        args = {} if args is None else args
        unknown = sorted(k for k in args if k not in self.params)
        if unknown:
            accepted = ", ".join(self.params) or "no arguments"
            raise ArgumentError(f"unknown argument {unknown[0]!r} for {self.name}; it accepts: {accepted}")
        out: Dict[str, Any] = {}
        for name, schema in self.params.items():
            value = args.get(name)
            if value is None:
                if name in self.required:
                    raise ArgumentError(f"missing required argument {name!r}: {schema.get('description', '')}".rstrip(": "))
                out[name] = copy.deepcopy(schema.get("default"))
            else:
                out[name] = check_value(f"argument {name!r}", value, schema)
        return out


# JSON Schema shorthands for the input and output schemas.
_S: Dict[str, Any] = {"type": "string"}
_NS: Dict[str, Any] = {"type": ["string", "null"]}
_I: Dict[str, Any] = {"type": "integer"}
_B: Dict[str, Any] = {"type": "boolean"}
_NB: Dict[str, Any] = {"type": ["boolean", "null"]}
_O: Dict[str, Any] = {"type": "object"}
_NO: Dict[str, Any] = {"type": ["object", "null"]}
_NN: Dict[str, Any] = {"type": ["number", "null"]}
_ANY: Dict[str, Any] = {}


def _arr(items: Dict[str, Any]) -> Dict[str, Any]:
    return {"type": "array", "items": items}


def _obj(props: Dict[str, Any], required: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props if required is None else required)}


def _p(schema: Dict[str, Any], description: str, **extra: Any) -> Dict[str, Any]:
    return {**schema, "description": description, **extra}


RUN_TEXT = ("a run: its id, a unique prefix or suffix (>= 6 characters), 'latest', 'latest~N', or a .jsonl "
            "path in the runs folder")
WHERE_TEXT = ("conditions that must all hold, each 'PATH OP VALUE' with OP one of = != < <= > >= ~ (regex); "
              "PATH a field (id, name, status, started, commit, branch, dirty, host, ...), a metadata path "
              "(hparams.lr) or a metric path (loss; loss:min, :max, :last, :count), e.g. 'hparams.lr<0.01'")

RUN_ROW = _obj({"id": _S, "short_id": _S, "started": _S, "name": _S, "status": _S, "commit": _NS,
                "branch": _NS, "dirty": _NB, "replay_of": _NS, "metadata": _O, "metrics": _O,
                "tags": _arr(_S), "latest_note": _NO})
ARTIFACT_ROW = _obj({"run_id": _S, "short_id": _S, "run_name": _S, "path": _S, "kind": _NS, "bytes": _ANY,
                     "mtime": _ANY, "sha256": _NS, "hashed": _ANY, "note": _NS, "status": _S, "location": _S},
                    ["run_id", "path", "status", "location"])
CODE_REF = _obj({"run_id": _S, "short_id": _S, "commit": _NS, "branch": _NS, "dirty": _NB, "base_commit": _NS})


def _runs(srv: "Server") -> List[store.Run]:
    return index.load(srv.root)


def _run(srv: "Server", ref: str) -> store.Run:
    return store.Run.read(ids.resolve(ref, srv.root))


def _list_runs(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return query.list_runs(_runs(srv), a["where"], a["sort"], a["limit"])


def _keys(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return query.keys([_run(srv, a["run"])] if a["run"] else _runs(srv))


def _show_run(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return codestate.show(_run(srv, a["run"]))


def _run_log(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    run = _run(srv, a["run"])
    try:
        lines = store.read_log(run, a["tail"], a.get("grep"))
    except store.LogError as exc:
        raise ToolFailure(str(exc)) from None
    if lines is None:
        raise ToolFailure(store.no_output(run))
    texts = [l.decode("utf-8", "replace").rstrip("\r\n") for l in lines]
    cut = [t[:2000] for t in texts]
    budget, kept = 20_000, []
    for t in reversed(cut):
        budget -= len(t) + 1
        if budget < 0:
            break
        kept.append(t)
    kept.reverse()
    return {"run_id": run.run_id, "lines": kept, "truncated": kept != texts}


def _best_run(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return query.best(_runs(srv), a["metric"], a["minimize"], a["final"], a["where"], a["all_runs"])


def _metric_history(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return query.history(_run(srv, a["run"]), a["metric"], a["max_points"], a["step"])


def _compare_runs(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return query.compare(_run(srv, a["a"]), _run(srv, a["b"]))


def _code_diff(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    b = _run(srv, a["b"]) if a["b"] else None
    return codestate.diff(_run(srv, a["a"]), b, stat=a["stat"], max_lines=a["max_lines"], runs_dir=srv.root,
                          base=a["base"])


def _restore_run(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return codestate.restore(_run(srv, a["run"]), a["into"], checkout=False)


def _progress(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return progress.progress(_runs(srv), a["metric"], a["minimize"], a["where"], a["limit"], a["all_runs"])


def _list_notes(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return query.notes(_runs(srv), a["where"], a["kind"], a["limit"])


def _add_note(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return memory.add_note(ids.resolve(a["run"], srv.root), a["text"], a["kind"])


def _tag_run(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return memory.tag_run(ids.resolve(a["run"], srv.root), a["add"], a["remove"])


def _list_artifacts(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return artifacts.listing([_run(srv, a["run"])] if a["run"] else _runs(srv), a["kind"])


def _list_actions(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    return actions.listing(srv.root, _run(srv, a["run"]) if a["run"] else None)


ACTION_TIMEOUT = 600.0  # seconds one run_action may take before its process is killed


def _run_action(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    """Execute the action in a child process (`--action-worker`): user code may print, read stdin, chdir,
    call os._exit, hang or crash, and the server neither dies, blocks nor keeps a stale import."""
    request = json.dumps({"root": srv.root, "arguments": a})
    cmd = [sys.executable, "-m", "exprag_plus.mcp", "--action-worker"]
    try:
        p = subprocess.run(cmd, input=request.encode("utf-8"), stdout=subprocess.PIPE, stderr=None,
                           timeout=ACTION_TIMEOUT, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise ToolFailure(f"action {a['name']!r} was stopped after {ACTION_TIMEOUT:g} s; it may have done part "
                          "of its work (see list_actions)") from None
    try:
        reply = json.loads(p.stdout.decode("utf-8"))
    except ValueError:
        raise ToolFailure(f"action {a['name']!r} ended its process (exit code {p.returncode}) before reporting; "
                          "see list_actions for what was recorded") from None
    if "error" in reply:
        raise ToolFailure(reply["error"])
    return reply["ok"]


def _run_action_here(srv: Any, a: Dict[str, Any]) -> Dict[str, Any]:
    run = _run(srv, a["run"])
    interaction = actions.PrefilledInteraction(a["answers"], source="answers",
                                               reason="an MCP tool call cannot ask questions")
    try:
        record = actions.run_action(run, a["name"], interaction, code=a["code"])
    except actions.ActionFailed as exc:
        raise ToolFailure(f"{exc} (recorded in run {run.short_id}: see list_actions, or "
                          f"`exprag-plus actions show {run.short_id} {a['name']}` for the traceback)") from None
    except KeyboardInterrupt:
        raise ToolFailure(f"action {a['name']!r} raised KeyboardInterrupt (recorded in run {run.short_id})") from None
    out = {"run_id": run.run_id, "name": a["name"], "status": record.get("status"),
           "answers": record.get("answers", {}), "result": record.get("result"),
           "duration_ms": record.get("duration_ms"), "code": record.get("code")}
    text = json.dumps(out["result"], ensure_ascii=False)
    if len(text) > MAX_ACTION_RESULT:  # the reply stays bounded; the record keeps the whole value
        out["result"] = None
        out["result_preview"] = text[:MAX_ACTION_RESULT]
        out["result_truncated"] = (f"the result is {len(text)} characters of JSON, more than {MAX_ACTION_RESULT}: "
                                   f"the whole of it is in the action_run record (seq {record.get('seq')}) of "
                                   f"{run.path}")
    return out


def action_worker() -> int:
    """The child of `_run_action`: one request on stdin, one JSON reply on the real stdout, nothing else."""
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # whatever the action prints goes to the server's log
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    srv = types.SimpleNamespace(root=request["root"])
    try:
        reply: Dict[str, Any] = {"ok": records.jsonable(_run_action_here(srv, request["arguments"]))}
    except _TOOL_FAILURES as exc:
        reply = {"error": one_line(exc) or type(exc).__name__}
    except BaseException as exc:  # SystemExit and the like, from user code: still a reply
        reply = {"error": one_line(f"action {request['arguments'].get('name')!r} raised {type(exc).__name__}: {exc}")}
    data = json.dumps(reply, ensure_ascii=False, allow_nan=False).encode("utf-8")
    while data:
        data = data[os.write(reply_fd, data):]
    return 0


def _task_info(srv: "Server", a: Dict[str, Any]) -> Dict[str, Any]:
    from .schema import TaskSchema

    return TaskSchema.from_file(a["path"]).info_dict()


def _tools() -> Dict[str, Tool]:
    tools = [
        Tool("list_runs", "List runs",
             "Runs in the runs folder, newest first, with status, code commit and final metrics. Filter with "
             "`where`, order with `sort`; at most `limit` runs (default 20; 0 for all). `matched` vs `shown` "
             "tells whether more matched.",
             {"where": _p(_arr(_S), WHERE_TEXT, default=[]),
              "sort": _p(_S, "order by this field, metadata or metric path, ascending; '-PATH' for descending "
                             "(default: newest first)"),
              "limit": _p(_I, "at most this many runs (0 for all)", default=20, minimum=0)},
             (), _obj({"total": _I, "matched": _I, "shown": _I, "runs": _arr(RUN_ROW)}), _list_runs),
        Tool("keys", "Discover metadata and metric names",
             "Every metadata path (with a few example values), every metric path (numbers with min/max over "
             "runs; text and booleans with example values), and the step axes (step, epoch, ...), of all runs "
             "or of one run. Call it first to learn the names the other tools take.",
             {"run": _p(_S, RUN_TEXT + " (default: all runs)")},
             (), _obj({"runs": _I, "fields": _arr(_S), "metadata": _O, "metrics": _O, "axes": _O}), _keys),
        Tool("show_run", "Show one run",
             "Everything about one run: status, timing, command, host, metadata, code state (commit, snapshot "
             "branch of a dirty tree), error, and the summary of every metric (last, min, max, count, nonfinite).",
             {"run": _p(_S, RUN_TEXT)}, ("run",),
             _obj({**RUN_ROW["properties"], "ended": _NS, "duration_s": _NN, "metadata": _O, "process": _O,
                   "host": _O, "git": _NO, "git_error": _NS, "replay_of": _NS, "error": _NO, "summary": _O,
                   "records": _O, "path": _S, "notes": _arr(_O), "same_code": _NO, "command": _NO, "exit_code": {"type": ["integer", "null"]},
                   "signal": _NS, "output": _NO, "artifacts": _arr(ARTIFACT_ROW), "artifact_scan": _NO}), _show_run),
        Tool("run_log", "A run's captured output",
             "What a command recorded with `exprag-plus run -- CMD` printed (stdout and stderr in arrival order): "
             "the last `tail` lines (default 100, at most 2000), only lines matching the regex `grep` when given. "
             "Long lines are cut; `truncated` says so. Use it to see why a run failed.",
             {"run": _p(_S, RUN_TEXT), "tail": _p(_I, "the last N lines", default=100, minimum=1, maximum=2000),
              "grep": _p(_S, "only lines matching this regular expression")}, ("run",),
             _obj({"run_id": _S, "lines": _arr(_S), "truncated": _B}), _run_log),
        Tool("best_run", "Best run by a metric",
             "The winning run by METRIC: by each run's best value over its history (highest; lowest with "
             "`minimize`), or by its last value with `final`. Says which rule it used, gives the winner's best "
             "and final values and the top 5; `tied` counts other runs with the winner's value (the earliest-started wins). "
             "Only completed runs win unless `all_runs` (or a `where` on status); `left_out` counts the others by status; "
             "`warning` says when the winner's metric went non-finite (it may have diverged).",
             {"metric": _p(_S, "a metric path, e.g. 'val.acc' (see keys)"),
              "minimize": _p(_B, "lower is better", default=False),
              "final": _p(_B, "rank by the last tracked value instead of the best", default=False),
              "where": _p(_arr(_S), WHERE_TEXT, default=[]),
              "all_runs": _p(_B, "rank failed, crashed, interrupted and running runs too", default=False)},
             ("metric",),
             _obj({"metric": _S, "rule": _S, "minimize": _B, "final": _B, "run": RUN_ROW, "artifacts": _arr(ARTIFACT_ROW),
                   "best": _ANY,
                   "best_step": _ANY, "last": _ANY, "last_step": _ANY, "considered": _I, "nonfinite": _I, "without_metric": _I,
                   "left_out": _O, "tied": _I, "tied_with": _arr(_obj({"id": _S, "short_id": _S, "name": _S, "replay_of": _NS})),
                   "warning": _NS,
                   "ranking": _arr(_obj({"id": _S, "short_id": _S, "name": _S, "value": _ANY}))}),
             _best_run),
        Tool("metric_history", "Metric history of a run",
             "A metric's tracked values in one run (seq, step, value), sampled evenly down to `max_points` "
             "(default 100; 0 for all; first, last, min and max kept), or only the point at `step`.",
             {"run": _p(_S, RUN_TEXT), "metric": _p(_S, "a metric path, e.g. 'loss' (see keys)"),
              "max_points": _p(_I, "sample down to this many points (0 for all)", default=100, minimum=0),
              "step": _p(_I, "only the point(s) at this step")},
             ("run", "metric"),
             _obj({"run": _S, "short_id": _S, "metric": _S, "count": _I, "shown": _I, "sampled": _B,
                   "summary": _NO, "points": _arr(_obj({"seq": _ANY, "step": _ANY, "value": _ANY}, ["value"]))}),
             _metric_history),
        Tool("compare_runs", "Compare two runs",
             "What differs between run a and run b: changed metadata, final metrics with deltas (b - a), "
             "and their code commits.",
             {"a": _p(_S, RUN_TEXT), "b": _p(_S, RUN_TEXT)}, ("a", "b"),
             _obj({"a": RUN_ROW, "b": RUN_ROW,
                   "metadata": _arr(_obj({"path": _S, "a": _ANY, "b": _ANY, "only_in": _NS})),
                   "metrics": _arr(_obj({"path": _S, "a": _ANY, "b": _ANY, "delta": _ANY})),
                   "axes": _arr(_O),
                   "code": _obj({"a": _O, "b": _O, "same_commit": _B})}), _compare_runs),
        Tool("code_diff", "Code diff of runs",
             "The git diff of the code that ran: from run a to run b, or to the current working tree when b "
             "is left out. A dirty run's uncommitted changes are included (its snapshot commit). `stat` gives "
             "a per-file summary; at most `max_lines` lines (default 2000; 0 for all).",
             {"a": _p(_S, RUN_TEXT), "b": _p(_S, RUN_TEXT + " (default: the current working tree)"),
              "stat": _p(_B, "a summary of changed files instead of the patch", default=False),
              "max_lines": _p(_I, "at most this many lines (0 for all)", default=2000, minimum=0),
              "base": _p(_B, "run a's own change: from the commit it started from to the code that ran (no b)",
                         default=False)},
             ("a",),
             _obj({"a": CODE_REF, "b": {"anyOf": [CODE_REF, {"const": "worktree"}, {"const": "base"}]}, "repo": _S,
                   "stat": _B, "base": _B,
                   "lines": _I, "truncated": _B, "diff": _S}), _code_diff),
        Tool("restore_run", "Restore a run's code",
             "Check out the exact code of a run (its commit, or the snapshot of its dirty tree) into a NEW git "
             "worktree and return its path; the current checkout, index and branches are never touched. "
             "Default location: inside .git/exprag-plus-worktrees/ (remove with `git worktree remove PATH`).",
             {"run": _p(_S, RUN_TEXT),
              "into": _p(_S, "folder for the new worktree; must not exist or be empty (relative to the "
                             "server's working directory)")},
             ("run",), _obj({"run_id": _S, "commit": _S, "path": _S, "cwd": _S, "checked_out": _B}),
             _restore_run, read_only=False, destructive=False, idempotent=False),
        Tool("progress", "Progress across runs",
             "Runs in start order with each run's best value of METRIC (highest; lowest with `minimize`), the "
             "best so far, whether it improved on every earlier run, its tags and latest note, and "
             "`since_improvement`: how many runs since the last improvement.",
             {"metric": _p(_S, "a metric path, e.g. 'val_loss' (see keys)"),
              "minimize": _p(_B, "lower is better", default=False),
              "where": _p(_arr(_S), WHERE_TEXT, default=[]),
              "limit": _p(_I, "rows: every improvement and the latest N runs (0 for all)", default=50, minimum=0),
              "all_runs": _p(_B, "let runs that did not complete move the best so far", default=False)},
             ("metric",),
             _obj({"metric": _S, "minimize": _B, "rule": _S, "total": _I, "matched": _I, "with_value": _I,
                   "improvements": _I, "since_improvement": _I, "best": _NO, "shown": _I, "runs": _arr(_O)}), _progress),
        Tool("list_notes", "Notes across runs",
             "Every note of the matching runs, oldest first, each with its run (id, short_id, name, status): "
             "what was tried, why, and what was decided. The latest `limit` notes.",
             {"where": _p(_arr(_S), WHERE_TEXT, default=[]),
              "kind": _p(_S, "only notes of this kind, e.g. decision"),
              "limit": _p(_I, "the latest N notes (0 for all)", default=50, minimum=0)},
             (), _obj({"runs": _I, "matched": _I, "shown": _I, "notes": _arr(_O)}), _list_notes),
        Tool("add_note", "Add a note to a run (writes)",
             "WRITES: append a note record to a run's file (append-only; a correction is a new note). Record "
             "why a run exists and what it showed: kind 'hypothesis' before, 'observation' and 'decision' "
             "after, 'conclusion' at the end. Notes appear in show_run and list_runs (latest_note) and are "
             "searched by the where 'note~REGEX'.",
             {"run": _p(_S, RUN_TEXT), "text": _p(_S, "the note"),
              "kind": _p(_S, "one word: hypothesis, observation, decision, conclusion, ...")},
             ("run", "text"), _obj({"type": _S, "run_id": _S, "seq": _I, "time": _S, "text": _S, "kind": _NS},
                                   ["type", "run_id", "seq", "time", "text"]),
             _add_note, read_only=False, destructive=False, idempotent=False),
        Tool("tag_run", "Tag a run (writes)",
             "WRITES: append a tag record to a run's file: `add` tags (e.g. keep, discard, baseline) and/or "
             "`remove` tags. A run's tags are the fold of its tag records; list_runs shows them and the where "
             "'tag=keep' selects by them.",
             {"run": _p(_S, RUN_TEXT), "add": _p(_arr(_S), "tags to add", default=[]),
              "remove": _p(_arr(_S), "tags to remove", default=[])},
             ("run",), _obj({"type": _S, "run_id": _S, "seq": _I, "time": _S, "add": _arr(_S), "remove": _arr(_S)},
                            ["type", "run_id", "seq", "time", "add", "remove"]),
             _tag_run, read_only=False, destructive=False, idempotent=False),
        Tool("list_artifacts", "List the files runs wrote",
             "The artifacts (checkpoints, data, figures, logs) recorded by one run or by every run (newest run "
             "first): path (relative to the git top level), kind, bytes, sha256, and `status` now: ok (same size "
             "and mtime, or same sha256), changed (`now` gives its size and mtime), missing. `location` is the "
             "file's absolute path on this machine. For the model of the best run, best_run returns `artifacts` too.",
             {"run": _p(_S, RUN_TEXT + " (default: every run)"),
              "kind": _p(_S, "only this kind", enum=list(artifacts.KINDS))}, (),
             _obj({"runs": _I, "artifacts": _arr(ARTIFACT_ROW), "counts": _O, "omitted": _I}), _list_artifacts),
        Tool("list_actions", "List post-run actions",
             "The post-run actions registered in one run, or in every run (newest run first): name, class, "
             "description, params, how many times each was run and the last status. Run one with run_action.",
             {"run": _p(_S, RUN_TEXT + " (default: every run)")}, (),
             _obj({"actions": _arr(_obj({"run_id": _S, "short_id": _S, "run_name": _S, "name": _S, "class": _ANY,
                                         "description": _S, "params": _ANY, "times_run": _I, "last_status": _NS},
                                        ["run_id", "name", "times_run"])),
                   "runs": _I}), _list_actions),
        Tool("run_action", "Run a post-run action",
             "Execute a post-run action of a run (see list_actions) and record it in the run (an action_run "
             "record). Nothing can be asked interactively: give every answer up front in `answers` ({key: "
             "value}; booleans true/false, a choice as its text); a question without an answer and without a "
             "default is an error naming the key and what it accepts. A result over 20,000 characters of JSON comes "
             "back as `result_preview` (the run's record keeps it whole). The action runs user code, in a process of "
             "its own that is stopped after 600 s: it may change things outside this server.",
             {"run": _p(_S, RUN_TEXT), "name": _p(_S, "the action's name, exactly (see list_actions)"),
              "answers": _p({"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                            "answers to the action's questions by key", default={}),
              "code": _p(_S, "import the action's class from the current code, or from the run's own commit "
                             "(a temporary git worktree)", enum=["current", "run"], default="current")},
             ("run", "name"),
             _obj({"run_id": _S, "name": _S, "status": _S, "answers": _O, "result": _ANY, "duration_ms": _ANY,
                   "code": _ANY}, ["run_id", "name", "status", "answers", "result"]),
             _run_action, read_only=False, destructive=True, idempotent=False),
        Tool("task_info", "Describe a task schema",
             "What a task schema file (.yaml/.yml, .json or .toml; hpcflow keys) declares: objective, inputs "
             "with defaults, outputs, and each action's commands, inputs and outputs. Validation errors say "
             "where and what to fix.",
             {"path": _p(_S, "the schema file (relative to the server's working directory)")}, ("path",),
             _obj({"objective": _S, "inputs": _arr(_O), "outputs": _arr(_O), "actions": _arr(_O),
                   "sequences": _arr(_O)}), _task_info),
    ]
    return {t.name: t for t in tools}


TOOLS: Dict[str, Tool] = _tools()

# Failures that are the caller's to fix, or a well-formed request that found nothing: `isError` results.
_TOOL_FAILURES: Tuple[Type[BaseException], ...] = (
    ArgumentError, ToolFailure, query.QueryError, query.NoResult, ids.RunNotFound, codestate.CodeStateError,
    git.GitError, actions.ActionNotFound, actions.ActionLoadError, ValueError, OSError)


def call_tool(srv: "Server", tool: Tool, arguments: Optional[Dict[str, Any]], version: str) -> Dict[str, Any]:
    """A tools/call result: the output as JSON text (and as structuredContent where the version has it),
    or `isError` with a one-line reason."""
    try:
        args = tool.arguments(arguments)
        data = records.jsonable(tool.fn(srv, args))
        text = json.dumps(data, ensure_ascii=False, allow_nan=False)
        if _SURROGATE.search(text):
            data = _no_surrogates(data)
            text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    except _TOOL_FAILURES as exc:
        return {"content": [{"type": "text", "text": one_line(exc) or type(exc).__name__}], "isError": True}
    except BaseException as exc:  # a bug, or SystemExit from user code: still a result, never a dead worker
        log(f"internal error in {tool.name}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        return {"content": [{"type": "text", "text": one_line(f"internal error: {type(exc).__name__}: {exc}")}],
                "isError": True}
    result: Dict[str, Any] = {"content": [{"type": "text", "text": text}]}
    if at_least(version, "2025-06-18"):
        result["structuredContent"] = data
    result["isError"] = False
    return result


# --- the JSON-RPC server ------------------------------------------------------------------------------


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _error(rid: Any, code: int, message: str, data: Any = None) -> Dict[str, Any]:
    err: Dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": rid, "error": err}


def _valid_id(rid: Any) -> bool:
    """A string (of valid Unicode: a lone surrogate cannot be echoed in UTF-8) or an integer."""
    if isinstance(rid, str):
        return not _SURROGATE.search(rid)
    return isinstance(rid, int) and not isinstance(rid, bool)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(value: Any) -> Any:
    """Data whose strings have UTF-8 forms: a lone surrogate (from a `\\udXXX` escape in a run file) becomes
    the text `\\xNN` when it stands for an escaped byte, else U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub(lambda m: "\\x%02x" % (ord(m[0]) - 0xDC00) if "\udc80" <= m[0] <= "\udcff"
                              else "\ufffd", value)
    if isinstance(value, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_surrogates(v) for v in value]
    return value


def _utf8_line(message: Any) -> bytes:
    """One strict UTF-8 JSON line (strings inside JSON text, like a tool's `content`, are cleaned too)."""
    line = json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    if _SURROGATE.search(line):
        line = json.dumps(_no_surrogates(message), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return line.encode("utf-8") + b"\n"


def _id_key(rid: Any) -> Tuple[str, Any]:
    return (type(rid).__name__, rid)


class Server:
    """The protocol state machine over a line-oriented transport: feed it lines with `handle_line`.

    `write` receives whole encoded lines (each ends in a newline), one call per message, never concurrently.
    """

    def __init__(self, root: str, write: Callable[[bytes], Any], workers: int = WORKERS,
                 tools: Optional[Dict[str, Tool]] = None) -> None:
        self.root = root
        self.tools = TOOLS if tools is None else tools
        self.negotiated: Optional[str] = None
        self.initialized = False
        self._write = write
        self._write_lock = threading.Lock()
        self._broken = False
        self._jobs: "queue.Queue[Optional[Callable[[], None]]]" = queue.Queue()
        self._state = threading.Condition()
        self._active = 0
        self._pending: Set[Tuple[str, Any]] = set()
        self._cancelled: Set[Tuple[str, Any]] = set()
        self._threads = [threading.Thread(target=self._worker, name=f"exprag-plus-mcp-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._threads:
            t.start()

    # --- output -----------------------------------------------------------------------------------
    def send(self, message: Any) -> None:
        try:
            data = _utf8_line(message)
        except Exception as exc:  # never half a message: answer the request with an error
            log(f"cannot encode a response: {type(exc).__name__}: {exc}")
            rid = message.get("id") if isinstance(message, dict) else None
            data = _utf8_line(_error(rid if _valid_id(rid) else None, INTERNAL_ERROR,
                                     one_line(f"Internal error: unencodable result ({type(exc).__name__}: {exc})")))
        with self._write_lock:
            if self._broken:
                return
            try:
                self._write(data)
            except (OSError, ValueError) as exc:
                self._broken = True
                log(f"stdout closed ({exc}); dropping further responses")

    # --- input ------------------------------------------------------------------------------------
    def handle_line(self, line: bytes) -> None:
        text = line.strip()
        if not text:
            return
        try:
            message = json.loads(text.decode("utf-8"))
        except UnicodeDecodeError as exc:
            self.send(_error(None, PARSE_ERROR, f"Parse error: not UTF-8 ({exc.reason})"))
            return
        except ValueError as exc:
            self.send(_error(None, PARSE_ERROR, f"Parse error: {getattr(exc, 'msg', exc)}"))
            return
        except RecursionError:
            self.send(_error(None, PARSE_ERROR, "Parse error: nested too deeply"))
            return
        self.handle_message(message)

    def handle_message(self, message: Any) -> None:
        if isinstance(message, list):
            if not message:
                self.send(_error(None, INVALID_REQUEST, "Invalid Request: empty batch"))
                return
            self._submit(lambda: self._run_batch(message), None)
        elif isinstance(message, dict) and message.get("method") == "tools/call" and _valid_id(message.get("id")):
            self._submit(lambda: self._respond(message), message["id"])
        else:
            reply = self._respond(message)
            if reply is not None:
                self.send(reply)

    def _run_batch(self, items: List[Any]) -> Any:
        replies = [r for r in (self._respond(m) for m in items) if r is not None]
        return replies or None

    def _submit(self, job: Callable[[], Any], rid: Any) -> None:
        key = _id_key(rid) if rid is not None else None
        with self._state:
            self._active += 1
            if key is not None:
                self._pending.add(key)

        def run() -> None:
            try:
                with self._state:
                    skip = key is not None and key in self._cancelled
                reply = None if skip else job()
                with self._state:
                    if key is not None and key in self._cancelled:
                        reply = None  # the client cancelled it: no response (MCP cancellation)
                if reply is not None:
                    self.send(reply)
            except BaseException as exc:  # pragma: no cover - _respond catches everything
                log(f"worker error: {type(exc).__name__}: {exc}")
            finally:
                with self._state:
                    self._active -= 1
                    if key is not None:
                        self._pending.discard(key)
                        self._cancelled.discard(key)
                    self._state.notify_all()

        self._jobs.put(run)

    def _worker(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job()

    def close(self, grace: float = SHUTDOWN_GRACE_S) -> None:
        """Stop the workers, giving in-flight calls `grace` seconds to finish (their replies still go out)."""
        with self._state:
            self._state.wait_for(lambda: self._active == 0, timeout=grace)
        for _ in self._threads:
            self._jobs.put(None)

    def serve(self, stdin: BinaryIO) -> int:
        """Read lines until EOF; returns the exit code (0)."""
        while True:
            try:
                line = stdin.readline()
            except (OSError, ValueError) as exc:
                log(f"stdin unreadable ({exc}); stopping")
                break
            if not line:
                break
            try:
                self.handle_line(line)
            except Exception as exc:  # a bug: the server must survive any input line
                log(f"internal error on an input line: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        self.close()
        return 0

    # --- one message --------------------------------------------------------------------------------
    def _respond(self, message: Any) -> Optional[Dict[str, Any]]:
        """The response to one message (None for a notification or a stray response)."""
        if not isinstance(message, dict):
            return _error(None, INVALID_REQUEST, "Invalid Request: a message must be a JSON object")
        has_id = "id" in message
        rid = message.get("id")
        method = message.get("method")
        reply_id = rid if has_id and _valid_id(rid) else None
        if message.get("jsonrpc") != "2.0":
            return _error(reply_id, INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
        if method is None and ("result" in message or "error" in message):
            return None  # a response, but this server sends no requests: nothing to match it with
        if not isinstance(method, str):
            return _error(reply_id, INVALID_REQUEST, 'Invalid Request: "method" must be a string')
        if has_id and not _valid_id(rid):
            return _error(None, INVALID_REQUEST, 'Invalid Request: "id" must be a string (valid Unicode) or an integer')
        params = message.get("params")
        if not has_id:
            self._notification(method, params if isinstance(params, dict) else {})
            return None
        if params is not None and not isinstance(params, dict):
            return _error(rid, INVALID_PARAMS, 'Invalid params: "params" must be an object')
        try:
            return {"jsonrpc": "2.0", "id": rid, "result": self._request(method, params or {})}
        except RpcError as exc:
            return _error(rid, exc.code, exc.message, exc.data)
        except Exception as exc:  # a bug: answer, log, go on
            log(f"internal error on {method}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            return _error(rid, INTERNAL_ERROR, one_line(f"Internal error: {type(exc).__name__}: {exc}"))

    def _notification(self, method: str, params: Dict[str, Any]) -> None:
        if method == "notifications/initialized":
            self.initialized = True
        elif method == "notifications/cancelled":
            rid = params.get("requestId")
            if _valid_id(rid):
                with self._state:
                    if _id_key(rid) in self._pending:
                        self._cancelled.add(_id_key(rid))
        # anything else (progress, roots/list_changed, unknown): ignored, never answered

    def _version(self, method: str, params: Dict[str, Any]) -> str:
        """The protocol version a request is served at (see the module docstring)."""
        meta = params.get("_meta")
        if method != "initialize" and isinstance(meta, dict) and META_PROTOCOL_VERSION in meta:
            version = meta[META_PROTOCOL_VERSION]
            if not isinstance(version, str):
                raise RpcError(INVALID_PARAMS, f"Invalid params: _meta[{META_PROTOCOL_VERSION!r}] must be a string")
            if not isinstance(meta.get(META_CLIENT_CAPABILITIES), dict):
                raise RpcError(INVALID_PARAMS, f"Invalid params: _meta[{META_CLIENT_CAPABILITIES!r}] is required "
                                               "(an object) on every 2026-07-28 request")
            if version not in KNOWN_VERSIONS:
                raise RpcError(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version",
                               {"supported": list(SUPPORTED_VERSIONS), "requested": version})
            return version
        if method == "server/discover":
            raise RpcError(INVALID_PARAMS, f"Invalid params: server/discover needs params._meta with "
                                           f"{META_PROTOCOL_VERSION!r} and {META_CLIENT_CAPABILITIES!r}")
        return self.negotiated or LATEST_HANDSHAKE_VERSION

    def _request(self, method: str, params: Dict[str, Any]) -> Dict[str, Any]:
        version = self._version(method, params)
        if method == "initialize":
            return self._initialize(params)
        if method == "ping":
            return self._shape(version, {})
        if method == "server/discover":
            return self._shape(LATEST_MODERN_VERSION if version not in MODERN_VERSIONS else version, {
                "supportedVersions": list(SUPPORTED_VERSIONS),
                "capabilities": {"tools": {"listChanged": False}},
                "instructions": INSTRUCTIONS,
                "ttlMs": TOOLS_LIST_TTL_MS, "cacheScope": "public"})
        if method == "tools/list":
            if params.get("cursor") is not None:
                raise RpcError(INVALID_PARAMS, "Invalid params: unknown cursor (the tool list has one page)")
            result: Dict[str, Any] = {"tools": [t.describe(version) for t in self.tools.values()]}
            if version in MODERN_VERSIONS:
                result.update({"ttlMs": TOOLS_LIST_TTL_MS, "cacheScope": "public"})
            return self._shape(version, result)
        if method == "tools/call":
            name = params.get("name")
            if not isinstance(name, str):
                raise RpcError(INVALID_PARAMS, 'Invalid params: tools/call needs "name" (a string)')
            tool = self.tools.get(name)
            if tool is None:
                raise RpcError(INVALID_PARAMS, f"Unknown tool: {name!r}; tools: {', '.join(self.tools)}")
            arguments = params.get("arguments")
            if arguments is not None and not isinstance(arguments, dict):
                raise RpcError(INVALID_PARAMS, 'Invalid params: "arguments" must be an object')
            return self._shape(version, call_tool(self, tool, arguments, version))
        raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method}")

    def _initialize(self, params: Dict[str, Any]) -> Dict[str, Any]:
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise RpcError(INVALID_PARAMS, 'Invalid params: initialize needs "protocolVersion" (a string)')
        version = requested if requested in HANDSHAKE_VERSIONS else LATEST_HANDSHAKE_VERSION
        self.negotiated = version
        self.initialized = False
        return {"protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": self.server_info(version), "instructions": INSTRUCTIONS}

    @staticmethod
    def server_info(version: str) -> Dict[str, Any]:
        info: Dict[str, Any] = {"name": SERVER_NAME, "version": __version__}
        if at_least(version, "2025-06-18"):
            info["title"] = SERVER_TITLE
        return info

    def _shape(self, version: str, result: Dict[str, Any]) -> Dict[str, Any]:
        """2026-07-28 results carry `resultType` and the server's identity in `_meta`."""
        if version in MODERN_VERSIONS:
            result["resultType"] = "complete"
            result["_meta"] = {META_SERVER_INFO: self.server_info(version)}
        return result


# --- stdio --------------------------------------------------------------------------------------------


def _warning_to_stderr(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                       line: Any = None) -> None:
    log(f"warning: {message}")


def serve_stdio(root: Optional[str] = None, workers: int = WORKERS) -> int:
    """Serve over this process's stdin/stdout until stdin closes; returns the exit code."""
    folder = ids.runs_dir(root)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    # Protocol streams are private duplicates; fd 1 becomes stderr and fd 0 /dev/null, so no print,
    # warning or child process can write into the protocol or read from it.
    proto_out = os.fdopen(os.dup(1), "wb", buffering=0)
    proto_in = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(2, 1)
    os.dup2(devnull, 0)
    os.close(devnull)
    saved = (sys.stdout, sys.stdin, warnings.showwarning)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull, "r")
    warnings.showwarning = _warning_to_stderr

    def write(data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = proto_out.write(view)
            view = view[n or 0:]

    try:
        log(f"serving {folder} over stdio (MCP {', '.join(KNOWN_VERSIONS)})")
        return Server(folder, write, workers).serve(proto_in)
    finally:
        try:
            os.dup2(proto_out.fileno(), 1)
            os.dup2(proto_in.fileno(), 0)
        except OSError:
            pass
        sys.stdin.close()
        sys.stdout, sys.stdin, warnings.showwarning = saved
        proto_out.close()
        proto_in.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exprag_plus.mcp",
                                     description="The exprag-plus MCP server (stdio), as `exprag-plus mcp`.")
    parser.add_argument("--root", metavar="DIR",
                        help="the runs folder (default: $EXPRAG_PLUS_DIR, else .runs at the git top level)")
    parser.add_argument("--action-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.action_worker:
        return action_worker()
    try:
        return serve_stdio(args.root)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
