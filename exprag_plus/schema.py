"""Task schemas after hpcflow/MatFlow: model, loading, validation, resolution and execution.

Why this exists: a task schema states which parameters a piece of shell work consumes and produces, so
an experiment can record a command's inputs and outputs as data rather than as an opaque string. The
design points that differ from a naive template runner, each deliberate:

* no value is quoted for where it stands (that needs a bash parser, and parsers beside bash get
  bypassed). A token's value must be *plain*: `[A-Za-z0-9_./][A-Za-z0-9_.,:@%+=/-]*` or a number, text
  that means the same in every bash context; any other value is refused before anything runs, and the
  command reads it from `EXPRAG_PARAM_<NAME>`, an environment variable every command gets for every
  parameter (strings as they are, other values as JSON). Lists give one word per item;
* a `<<...>>` token that cannot be resolved is an error naming it, never left in the command;
* `<<args>>` expands to the command's `args` (the author's text, one quoted word each); `args` without
  `<<args>>` is an error;
* the whole parameter flow is checked when the schema is built, before anything runs;
* every error is one `SchemaError` (a `ValueError`) with a one-line message saying what, where
  (file:line:column for YAML, objective, `actions[i].commands[j]`, parameter) and what to do; a command
  that fails at run time raises `TaskFailed` carrying the partial `TaskResult`.

`timeout` in `run()` bounds the whole task: each command gets what remains of it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union, cast

from . import miniyaml

__all__ = [
    "NO_DEFAULT", "SchemaError", "TaskFailed", "SchemaInput", "SchemaOutput", "Environment",
    "ActionEnvironment", "Command", "SchemaAction", "TaskSchema", "TaskResult", "python_env",
    "expand_sequences", "parse_value",
]

OUTPUT_LIMIT = 4000
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*"
_TOKEN_RE = re.compile(r"<<(?P<body>[A-Za-z_](?:[^<>\n]*?[^<>\s])?)>>")
_NEAR_MISS_RE = re.compile(r"<<\s*(?:parameter|executable|args|sum|join|int|float|json|str|list)\b")
_FUNC_RE = re.compile(r"(?P<func>[A-Za-z_]\w*)(?:\[(?P<opts>[^\]]*)\])?\((?P<arg>[^()]*)\)", re.ASCII)
_OPT_RE = re.compile(r"\s*(?P<k>[A-Za-z_]\w*)\s*=\s*(?P<v>\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^,\s\"']+)\s*(?:,|$)")
_INT_TEXT = re.compile(r"[-+]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?(?:inf|infinity|nan)",
                         re.IGNORECASE)
_COMMAND_FUNCS = {"sum": (), "join": ("delim",)}
_OUTPUT_FUNCS = {"int": (), "float": (), "json": (), "str": (), "list": ("item_type", "delim")}
_SCOPES = ("any", "main")
_TOKEN_FORMS = ("<<parameter:NAME>>, <<executable:LABEL>>, <<args>>, <<sum(parameter:NAME)>>, "
                "<<join[delim=\",\"](parameter:NAME)>>, <<VARIABLE>>")


class SchemaError(ValueError):
    """A schema, its file or its inputs are wrong; the message is one line: what, where, what to do."""


class TaskFailed(RuntimeError):
    """A command failed, timed out or produced an unparseable output; `result` holds what ran."""

    def __init__(self, message: str, result: "TaskResult") -> None:
        super().__init__(message)
        self.result = result


class _NoDefault:
    """Sentinel: `default=None` is a real default of null, so "no default" needs its own value."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"

    def __copy__(self) -> "_NoDefault":
        return self

    def __deepcopy__(self, memo: Any) -> "_NoDefault":
        return self


NO_DEFAULT: Any = _NoDefault()


@dataclasses.dataclass(frozen=True)
class SchemaInput:
    parameter: str
    default: Any = NO_DEFAULT

    @property
    def required(self) -> bool:
        return self.default is NO_DEFAULT


@dataclasses.dataclass(frozen=True)
class SchemaOutput:
    parameter: str


@dataclasses.dataclass(frozen=True)
class Environment:
    """Named executables, so a schema says `<<executable:python>>` and the machine says which python."""

    name: str
    executables: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ActionEnvironment:
    environment: Union[str, Environment]
    scope: str = "any"


@dataclasses.dataclass(frozen=True)
class Command:
    command: str
    stdout: Optional[str] = None
    stderr: Optional[str] = None
    args: Optional[Sequence[Any]] = None
    variables: Optional[Mapping[str, Any]] = None


EnvironmentsSpec = Union[None, Mapping[str, Union[str, Environment]], Sequence[Union[ActionEnvironment, Mapping[str, Any]]]]


@dataclasses.dataclass(frozen=True)
class SchemaAction:
    commands: Sequence[Union[Command, Mapping[str, Any]]]
    environments: EnvironmentsSpec = None


python_env = Environment("python_env", {"python": shlex.quote(sys.executable)})
BUILTIN_ENVIRONMENTS: Dict[str, Environment] = {python_env.name: python_env}


@dataclasses.dataclass
class TaskResult:
    objective: str
    inputs: Dict[str, Any]
    outputs: Dict[str, Any] = dataclasses.field(default_factory=dict)
    commands: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    status: str = "ok"
    error: Optional[str] = None

    def to_record(self) -> Dict[str, Any]:
        """The fields of the run's JSONL `task` record, credentials redacted.

        The values of secret-named inputs (`api_key`, `password`...) are replaced wherever they appear:
        in `inputs`, and inside every command line, its output and the error message.
        """
        from .redact import redact_mapping, redact_text, secret_values

        known = secret_values(self.inputs)
        commands = [dict(c, **{k: redact_text(c[k], known) for k in ("command", "stdout", "stderr")
                               if isinstance(c.get(k), str)}) for c in self.commands]
        return {"objective": self.objective, "inputs": redact_mapping(self.inputs, known),
                "outputs": redact_mapping(self.outputs, known), "commands": commands, "status": self.status,
                "error": redact_text(self.error, known) if self.error else self.error}


# -- error context ---------------------------------------------------------------------------------------
class _Ctx:
    """Where we are, so every message can name the file position, the objective and the path."""

    def __init__(self, objective: Any = None, source: Optional[str] = None,
                 marks: Optional[miniyaml.Marks] = None) -> None:
        self.objective, self.source, self.marks = objective, source, marks or {}

    def error(self, path: Sequence[Any], what: str, fix: str = "") -> SchemaError:
        where = ""
        if self.source:
            where = self.source
            for i in range(len(path), -1, -1):
                if tuple(path[:i]) in self.marks:
                    line, col = self.marks[tuple(path[:i])]
                    where += f":{line}:{col}"
                    break
            where += ": "
        subject = f"task schema {self.objective!r}" if isinstance(self.objective, str) else "task schema"
        text = f"{where}{subject}{', ' + _fmt_path(path) if path else ''}: {what}{'; ' + fix if fix else ''}"
        return SchemaError(" ".join(text.split("\n")))


def _fmt_path(path: Sequence[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _suggest(word: Any, allowed: Iterable[str]) -> str:
    close = _closest(word, allowed)
    return f"did you mean {close!r}?" if close else f"allowed: {', '.join(allowed)}"


def _closest(word: Any, allowed: Iterable[str]) -> Optional[str]:
    close = difflib.get_close_matches(str(word), list(allowed), n=1)
    return close[0] if close else None


def _check_keys(ctx: _Ctx, d: Any, path: Tuple[Any, ...], allowed: Sequence[str], required: Sequence[str],
                what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ctx.error(path, f"{what} must be a mapping, got {_kind(d)}", "write it as 'key: value' lines")
    for k in d:
        if k not in allowed:
            raise ctx.error(path + (k,), f"unknown key {k!r} in {what}", _suggest(k, allowed))
    for k in required:
        if k not in d:
            raise ctx.error(path, f"{what} is missing the key {k!r}", f"add '{k}: ...'")
    return d


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


# -- tokens ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Token:
    text: str
    kind: str                      # parameter | executable | args | variable
    name: str = ""
    path: Tuple[str, ...] = ()
    func: Optional[str] = None
    opts: Tuple[Tuple[str, Any], ...] = ()

    def opt(self, key: str, default: Any = None) -> Any:
        return dict(self.opts).get(key, default)


_Template = List[Union[str, _Token]]


def _parse_token(ctx: _Ctx, path: Tuple[Any, ...], text: str, body: str, funcs: Mapping[str, Sequence[str]]
                 ) -> _Token:
    if body == "args":
        return _Token(text, "args")
    m = re.fullmatch(rf"parameter:({_PATH})", body)
    if m:
        name, *rest = m.group(1).split(".")
        return _Token(text, "parameter", name, tuple(rest))
    m = re.fullmatch(r"executable:([A-Za-z_][\w.-]*)", body, re.ASCII)
    if m:
        return _Token(text, "executable", m.group(1))
    m = _FUNC_RE.fullmatch(body)
    if m:
        func = m.group("func")
        if func not in funcs:
            where = "in commands" if "sum" in funcs else "in stdout/stderr"
            allowed = ", ".join(f"{f}(...)" for f in funcs)
            raise ctx.error(path, f"function {func!r} in {text} is not allowed {where}", f"use one of {allowed}")
        ref = re.fullmatch(rf"\s*parameter:({_PATH})\s*", m.group("arg"))
        if not ref:
            raise ctx.error(path, f"{text}: the argument of {func}() must be parameter:NAME",
                            f"write <<{func}(parameter:NAME)>>")
        opts = _parse_opts(ctx, path, text, m.group("opts"), funcs[func])
        name, *rest = ref.group(1).split(".")
        return _Token(text, "parameter", name, tuple(rest), func, opts)
    if _NAME_RE.fullmatch(body):
        return _Token(text, "variable", body)
    kind = re.match(r"\s*([^:(\[\s]*)", body).group(1)  # type: ignore[union-attr]
    if kind in ("parameter", "executable", "args", *_COMMAND_FUNCS, *_OUTPUT_FUNCS):
        raise ctx.error(path, f"malformed token {text}", f"tokens look like {_TOKEN_FORMS}, with no spaces "
                                                         f"inside and NAME made of letters, digits, '_' and dots")
    raise ctx.error(path, f"unknown token kind {kind!r} in {text}", f"tokens look like {_TOKEN_FORMS}")


def _parse_opts(ctx: _Ctx, path: Tuple[Any, ...], text: str, raw: Optional[str], allowed: Sequence[str]
                ) -> Tuple[Tuple[str, Any], ...]:
    if raw is None:
        return ()
    out: Dict[str, Any] = {}
    pos = 0
    while pos < len(raw) and raw[pos:].strip():
        m = _OPT_RE.match(raw, pos)
        if not m:
            raise ctx.error(path, f"cannot read the options [{raw}] of {text}", "write [key=value, key=\"text\"]")
        key, value = m.group("k"), m.group("v")
        if key not in allowed:
            raise ctx.error(path, f"unknown option {key!r} in {text}",
                            _suggest(key, allowed) if allowed else "this function takes no options")
        if value[0] == '"':
            value = json.loads(value)
        elif value[0] == "'":
            value = value[1:-1]
        out[key] = value
        pos = m.end()
    item_type = out.get("item_type")
    if item_type is not None and item_type not in ("int", "float", "str", "json"):
        raise ctx.error(path, f"item_type {item_type!r} in {text} is unknown", "use int, float, str or json")
    return tuple(out.items())


def _parse_template(ctx: _Ctx, path: Tuple[Any, ...], text: str,
                    funcs: Mapping[str, Sequence[str]] = _COMMAND_FUNCS) -> _Template:
    parts: _Template = []
    pos = 0
    starts = set()
    for m in _TOKEN_RE.finditer(text):
        parts.append(text[pos:m.start()])
        parts.append(_parse_token(ctx, path, m.group(0), m.group("body"), funcs))
        starts.add(m.start())
        pos = m.end()
    parts.append(text[pos:])
    for m in _NEAR_MISS_RE.finditer(text):
        if m.start() not in starts:
            snippet = text[m.start(): m.start() + 40].split("\n")[0]
            raise ctx.error(path, f"malformed token near {snippet!r}",
                            f"tokens look like {_TOKEN_FORMS}, with no spaces inside")
    return [p for p in parts if p != ""]


def _output_token(ctx: _Ctx, path: Tuple[Any, ...], text: Any) -> _Token:
    if not isinstance(text, str):
        raise ctx.error(path, f"must be a string like '<<parameter:NAME>>', got {_kind(text)}")
    parts = _parse_template(ctx, path, text.strip(), _OUTPUT_FUNCS)
    if len(parts) != 1 or not isinstance(parts[0], _Token) or parts[0].kind != "parameter":
        raise ctx.error(path, f"{text!r} must be exactly one <<parameter:NAME>> token",
                        "or a typed form like <<int(parameter:NAME)>>, <<float(...)>>, <<json(...)>>, "
                        "<<str(...)>>, <<list[item_type=float, delim=\":\"](...)>>")
    if parts[0].path:
        raise ctx.error(path, f"{text.strip()} maps output into a part of a parameter",
                        "map the whole stream to a parameter (no dots)")
    return parts[0]


# -- values in the shell ---------------------------------------------------------------------------------
class _ResolveError(Exception):
    def __init__(self, message: str, fix: str = "fix the input value") -> None:
        super().__init__(message)
        self.fix = fix


class _Tpl(list):  # type: ignore[type-arg]
    """A parsed string from `args`/`variables`, told apart from a literal non-string value."""


_PLAIN_RE = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_.,:@%+=/-]*|-(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_PLAIN_REST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./,:@%+=-")
_PLAIN_WORDS = "letters, digits and _ . / , : @ % + = - (a leading '-' only in a number)"
_ENV_PREFIX = "EXPRAG_PARAM_"
PROJECT_ENV = "EXPRAG_PROJECT_DIR"
_ENV_REF_RE = re.compile(r"(?<![A-Za-z0-9_])EXPRAG_PARAM_([A-Za-z0-9_]+)")
_ENV_LIMIT = 128 * 1024  # Linux refuses to start a program with a longer environment string


def _text(value: Any) -> str:
    """A value as the text a token puts in the command (structured values as JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value) if not isinstance(value, (list, tuple, dict)) else _json(value)


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


def _not_plain(text: str) -> str:
    """Why `text` is not plain ('' when it is): the first offending character and its position.

    Plain text means the same in every bash context: it cannot start a command, expand, split, glob,
    quote or be read as an option, so no parser is needed to place it.
    """
    if _PLAIN_RE.fullmatch(text):
        return ""
    if not text:
        return "it is empty"
    i = next(i for i, ch in enumerate(text) if ch not in _PLAIN_REST or (i == 0 and ch in ",:@%+=-"))
    lead = " (a leading '-' only in a number)" if i == 0 and text[0] == "-" else ""
    return f"{text[i]!r} at position {i + 1}{lead}"


def _plain(tok: _Token, texts: Sequence[str], item: bool = False) -> str:
    """`texts` joined by spaces, each checked plain; a `_ResolveError` says which and what to do."""
    for k, text in enumerate(texts):
        why = _not_plain(text)
        if why:
            which = f" (item {k})" if item else ""
            raise _ResolveError(
                f"{tok.text}: the value of parameter {tok.name!r}{which} is not plain: {why}"
                f"{' in ' + _short(text) if text else ''}",
                f"plain values are {_PLAIN_WORDS}; read any other text from the environment variable "
                f"\"${_ENV_PREFIX}{tok.name}\" in the command instead of {tok.text}")
    return " ".join(texts)


def _substitute(tok: _Token, value: Any) -> str:
    """A parameter token's value as command text, refused unless every word of it is plain."""
    if tok.func == "sum":
        return _plain(tok, [_text(value)])
    if tok.func == "join":
        items = [_text(v) for v in value]
        words = _plain(tok, items or [""], item=True)
        delim = tok.opt("delim", " ")
        return words if delim == " " else _plain(tok, [delim.join(items)])
    if isinstance(value, (list, tuple)):
        return _plain(tok, [_text(v) for v in value] or [""], item=True)
    return _plain(tok, [_text(value)])


def _environment(params: Mapping[str, Any]) -> Tuple[Dict[str, str], Dict[str, str]]:
    """A command's environment (ours, with one EXPRAG_PARAM_<NAME> per parameter: strings as they are,
    other values as JSON) and, apart, why a parameter could not be put there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_ENV_PREFIX)}
    left_out: Dict[str, str] = {}
    for name, value in params.items():
        text = value if isinstance(value, str) else _json(value)
        try:
            size = len(os.fsencode(text))
        except UnicodeEncodeError:
            left_out[name] = "its text cannot be encoded for the environment"
            continue
        if "\0" in text:
            left_out[name] = "it holds a NUL character, which no environment variable can carry"
        elif len(_ENV_PREFIX + name) + size + 2 > _ENV_LIMIT:
            left_out[name] = f"it is {size} bytes long, over the {_ENV_LIMIT} bytes one environment variable may hold"
        else:
            env[_ENV_PREFIX + name] = text
    return env, left_out


# bash's own variables that can hold a value's text: `_` (the last argument of the previous command), ...
_SHELL_DATA = frozenset(("_", "BASH_REMATCH", "REPLY", "MAPFILE", "OPTARG", "BASH_COMMAND", "BASH_ARGV",
                         "BASH_EXECUTION_STRING", "READLINE_LINE", "COPROC"))


def _check_names(line: str, spans: Sequence[Tuple[int, int, _Token]], env: Mapping[str, str]) -> None:
    """Refuse a value that spells, alone or with the text beside it, the name of a variable that holds (or
    bash may fill with) text that is not plain: shell arithmetic (`$((x))`, `declare -i`, `[[ -eq ]]`)
    evaluates such a variable's text as an expression, and `a[$(cmd)]` there runs cmd."""
    for m in re.finditer(r"[A-Za-z0-9_]+", line):
        name = m.group(0)
        for start, end, tok in spans:
            if start < m.end() and m.start() < end and (
                    name in _SHELL_DATA or (name in env and _not_plain(env[name]))):
                raise _ResolveError(f"{tok.text}: the value of {_who(tok)} makes the word {name!r}, the name of a "
                                    f"variable that may hold text that is not plain, which shell arithmetic would "
                                    f"run as code", "give a number or another word")


def _who(tok: _Token) -> str:
    return f"parameter {tok.name!r}" if tok.kind == "parameter" else tok.text


def _lookup(params: Mapping[str, Any], tok: _Token) -> Any:
    value = params[tok.name]
    trail = tok.name
    for seg in tok.path:
        if isinstance(value, Mapping):
            if seg in value:
                value = value[seg]
            elif re.fullmatch(r"-?[0-9]+", seg) and int(seg) in value:
                value = value[int(seg)]
            else:
                keys = ", ".join(map(str, list(value)[:10]))
                raise _ResolveError(f"{tok.text}: {trail!r} has no key {seg!r} (keys: {keys})")
        elif isinstance(value, (list, tuple)):
            if not re.fullmatch(r"-?[0-9]+", seg):
                raise _ResolveError(f"{tok.text}: {trail!r} is a list, so {seg!r} must be an index")
            if not -len(value) <= int(seg) < len(value):
                raise _ResolveError(f"{tok.text}: index {seg} is out of range for {trail!r} (length {len(value)})")
            value = value[int(seg)]
        else:
            raise _ResolveError(f"{tok.text}: {trail!r} is {_kind(value)}, not a mapping or list, so it has no "
                                f"{seg!r}")
        trail += "." + seg
    if tok.func == "sum":
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise _ResolveError(f"{tok.text}: sum() needs a list of numbers, {trail!r} is {_short(value)}")
        return sum(value)
    if tok.func == "join":
        if not isinstance(value, (list, tuple)):
            raise _ResolveError(f"{tok.text}: join() needs a list, {trail!r} is {_short(value)}")
    return value


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# -- outputs ---------------------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """Read text as int, then float, then JSON, else keep it as (stripped) text.

    Used for stdout/stderr mapped with plain `<<parameter:NAME>>`; handy for CLI `--input k=v` too.
    """
    s = text.strip()
    if _INT_TEXT.fullmatch(s):
        try:
            return int(s)
        except ValueError:  # beyond int's digit limit: keep the text rather than guess
            return s
    if _FLOAT_TEXT.fullmatch(s):
        return float(s)
    try:
        return json.loads(s)
    except ValueError:
        return s


def _typed(text: str, item_type: Optional[str]) -> Any:
    s = text.strip()
    if item_type is None:
        return parse_value(s)
    if item_type == "str":
        return s
    if item_type == "int":
        if _INT_TEXT.fullmatch(s):
            return int(s)
        raise ValueError("an integer")
    if item_type == "float":
        if _INT_TEXT.fullmatch(s) or _FLOAT_TEXT.fullmatch(s):
            return float(s)
        raise ValueError("a number")
    try:
        return json.loads(s)
    except ValueError:
        raise ValueError("JSON") from None


def _parse_output(tok: _Token, stream: str, text: str) -> Any:
    def fail(expected: str, shown: str) -> _ResolveError:
        return _ResolveError(f"parameter {tok.name!r} expected {expected} from {stream}, got {_short(shown)}")

    if tok.func is None:
        if not text.strip():  # a declared result that is empty is a command that did not produce it
            raise _ResolveError(f"parameter {tok.name!r} expected a value from {stream}, but the command printed "
                                f"nothing there")
        return parse_value(text)
    if tok.func == "str":
        return text.rstrip("\r\n")
    if tok.func == "list":
        s, delim = text.strip(), tok.opt("delim")
        if not s:
            return []
        items = s.split(delim) if delim is not None else s.split()
        out = []
        for i, item in enumerate(items):
            try:
                out.append(_typed(item, tok.opt("item_type")))
            except ValueError as e:
                raise fail(f"{e} for item {i}", item.strip()) from None
        return out
    try:
        return _typed(text, tok.func)
    except ValueError as e:
        raise fail(str(e), text.strip()) from None


def _truncate(text: str, limit: int = OUTPUT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} earlier characters cut ...]\n" + text[-limit:]


# -- sequences -------------------------------------------------------------------------------------------
def _seq_path(ctx: _Ctx, where: Tuple[Any, ...], raw: Any) -> Tuple[str, ...]:
    if not isinstance(raw, str) or not raw:
        raise ctx.error(where, f"path must be a string like 'inputs.p1', got {_short(raw)}")
    parts = raw.split(".")
    if parts[0] == "inputs":
        parts = parts[1:]
    elif len(parts) > 1:  # a bare dotted path could be hpcflow's `resources.…`: only `inputs.` may go deeper
        parts = []
    if not parts or not _NAME_RE.fullmatch(parts[0]) or not all(parts):
        raise ctx.error(where, f"path {raw!r} does not name an input",
                        "write 'inputs.NAME', 'inputs.NAME.KEY' or 'NAME'")
    return tuple(parts)


def _norm_sequences(ctx: _Ctx, sequences: Any, base: Tuple[Any, ...] = ("sequences",)) -> List[Dict[str, Any]]:
    if sequences is None:
        return []
    if not isinstance(sequences, (list, tuple)):
        raise ctx.error(base, f"sequences must be a list, got {_kind(sequences)}")
    out, seen = [], set()
    for i, seq in enumerate(sequences):
        where = base + (i,)
        _check_keys(ctx, seq, where, ("path", "values", "nesting_order"), ("path", "values"), "a sequence")
        parts = _seq_path(ctx, where + ("path",), seq["path"])
        values = seq["values"]
        if not isinstance(values, (list, tuple)) or not values:
            raise ctx.error(where + ("values",), f"values must be a non-empty list, got {_short(values)}")
        order = seq.get("nesting_order", 0)
        if isinstance(order, bool) or not isinstance(order, (int, float)):
            raise ctx.error(where + ("nesting_order",), f"nesting_order must be a number, got {_short(order)}")
        if parts in seen:
            raise ctx.error(where + ("path",), f"path {seq['path']!r} has two sequences", "merge their values")
        seen.add(parts)
        out.append({"path": "inputs." + ".".join(parts), "values": list(values), "nesting_order": order})
    return out


def expand_sequences(inputs: Mapping[str, Any], sequences: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """One input dict per element, with hpcflow's rule: sequences sharing a nesting_order are zipped
    (equal lengths required), different orders multiply, the lowest order varying slowest."""
    ctx = _Ctx()
    norm = _norm_sequences(ctx, list(sequences))
    groups: Dict[Any, List[Dict[str, Any]]] = {}
    for seq in norm:
        groups.setdefault(seq["nesting_order"], []).append(seq)
    for i, seq in enumerate(norm):
        head = seq["path"].split(".")[1]
        if head in inputs and "." not in seq["path"][len("inputs."):]:
            raise ctx.error(("sequences", i, "path"), f"{head!r} is given both as an input and as a sequence",
                            "give it in one place only")
    zipped = []
    for order in sorted(groups):
        group = groups[order]
        lengths = {len(s["values"]) for s in group}
        if len(lengths) > 1:
            detail = ", ".join(f"{s['path']} has {len(s['values'])}" for s in group)
            raise ctx.error(("sequences",), f"sequences with nesting_order {order} must have equal lengths "
                                            f"({detail})", "give them the same number of values or different "
                                                           "nesting orders")
        zipped.append([[(s["path"], s["values"][j]) for s in group] for j in range(lengths.pop())])
    out = []
    for combo in itertools.product(*zipped):
        element = copy.deepcopy(dict(inputs))
        for path, value in itertools.chain.from_iterable(combo):
            parts = path.split(".")[1:]
            target = element
            for j, part in enumerate(parts[:-1]):
                nxt = target.setdefault(part, {})
                if not isinstance(nxt, dict):
                    raise ctx.error(("sequences",), f"{path}: {'.'.join(parts[:j + 1])!r} is {_kind(nxt)}, "
                                                    f"not a mapping", "sequence a whole input instead")
                target = nxt
            target[parts[-1]] = copy.deepcopy(value)
        out.append(element)
    return out


# -- the schema ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Compiled:
    where: Tuple[Any, ...]
    template: _Template
    args: List[Any]                        # each a _Template (from a string) or a literal value
    variables: Dict[str, Any]              # likewise
    outputs: List[Tuple[str, _Token]]      # (stdout|stderr, token)
    executables: Dict[str, str]
    uses: Dict[str, Tuple[Any, ...]]       # parameter name -> where it is first used
    env_refs: Set[str]                     # parameters read as $EXPRAG_PARAM_<NAME>


class TaskSchema:
    """A validated task schema; build it from Python objects, `from_dict` or `from_file`."""

    def __init__(self, objective: str, inputs: Sequence[Union[SchemaInput, str, Mapping[str, Any]]] = (),
                 outputs: Sequence[Union[SchemaOutput, SchemaInput, str, Mapping[str, Any]]] = (),
                 actions: Sequence[Union[SchemaAction, Mapping[str, Any]]] = (),
                 sequences: Optional[Sequence[Mapping[str, Any]]] = None,
                 environments: Union[None, Iterable[Environment], Mapping[str, Environment]] = None,
                 *, _ctx: Optional[_Ctx] = None) -> None:
        ctx = _ctx or _Ctx(objective)
        ctx.objective = objective
        if not isinstance(objective, str) or not objective.strip() or "\n" in objective:
            raise ctx.error(("objective",), f"objective must be a one-line, non-empty string, got {_short(objective)}")
        self.objective = objective
        self.environments: Dict[str, Environment] = dict(BUILTIN_ENVIRONMENTS)
        extra = environments.values() if isinstance(environments, Mapping) else (environments or ())
        for env in extra:
            self._add_environment(ctx, (), env)
        self.inputs: Tuple[SchemaInput, ...] = tuple(self._norm_params(ctx, "inputs", inputs))
        self.outputs: Tuple[SchemaOutput, ...] = tuple(self._norm_params(ctx, "outputs", outputs))
        self.actions: Tuple[SchemaAction, ...] = tuple(self._norm_action(ctx, i, a)
                                                       for i, a in enumerate(self._as_list(ctx, ("actions",), actions)))
        self.sequences: Tuple[Dict[str, Any], ...] = tuple(_norm_sequences(ctx, sequences))
        self._compiled = self._validate(ctx)

    # -- construction helpers
    @staticmethod
    def _as_list(ctx: _Ctx, path: Tuple[Any, ...], value: Any) -> List[Any]:
        if value is None:
            return []
        if isinstance(value, (str, Mapping)) or not isinstance(value, Iterable):
            raise ctx.error(path, f"must be a list, got {_kind(value)}", "write one '- ' item per entry")
        return list(value)

    def _norm_params(self, ctx: _Ctx, key: str, items: Any) -> List[Any]:
        out: List[Any] = []
        seen: Dict[str, int] = {}
        for i, item in enumerate(self._as_list(ctx, (key,), items)):
            where = (key, i)
            if isinstance(item, str):
                name, default = item, NO_DEFAULT
            elif isinstance(item, (SchemaInput, SchemaOutput)):
                name, default = item.parameter, getattr(item, "default", NO_DEFAULT)
            else:
                allowed = ("parameter", "default") if key == "inputs" else ("parameter",)
                d = _check_keys(ctx, item, where, allowed, ("parameter",), f"an {key[:-1]}")
                name, default = d["parameter"], d.get("default", NO_DEFAULT)
            if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
                raise ctx.error(where, f"parameter name {name!r} is not an identifier",
                                "use letters, digits and '_' (not starting with a digit)")
            if name in seen:
                raise ctx.error(where, f"parameter {name!r} is listed twice in {key}", "list it once")
            seen[name] = i
            if key == "outputs":
                if default is not NO_DEFAULT:
                    raise ctx.error(where, f"output {name!r} has a default", "defaults belong to inputs")
                out.append(SchemaOutput(name))
            else:
                out.append(SchemaInput(name, default))
        return out

    def _norm_action(self, ctx: _Ctx, i: int, action: Any) -> SchemaAction:
        where: Tuple[Any, ...] = ("actions", i)
        if isinstance(action, SchemaAction):
            commands, envs = action.commands, action.environments
        else:
            d = _check_keys(ctx, action, where, ("commands", "environments"), ("commands",), "an action")
            commands, envs = d["commands"], d.get("environments")
        cmds = []
        for j, cmd in enumerate(self._as_list(ctx, where + ("commands",), commands)):
            cwhere = where + ("commands", j)
            if not isinstance(cmd, Command):
                d = _check_keys(ctx, cmd, cwhere, ("command", "stdout", "stderr", "args", "variables"),
                                ("command",), "a command")
                cmd = Command(**d)
            self._check_command(ctx, cwhere, cmd)
            cmds.append(cmd)
        if not cmds:
            raise ctx.error(where + ("commands",), "an action needs at least one command",
                            "add a '- command: ...' item under commands")
        return SchemaAction(tuple(cmds), self._norm_envs(ctx, where + ("environments",), envs))

    @staticmethod
    def _check_command(ctx: _Ctx, where: Tuple[Any, ...], cmd: Command) -> None:
        if not isinstance(cmd.command, str) or not cmd.command.strip():
            raise ctx.error(where + ("command",), f"command must be a non-empty string, got {_short(cmd.command)}",
                            "quote it in YAML")
        if cmd.args is not None and (isinstance(cmd.args, (str, Mapping)) or not isinstance(cmd.args, Sequence)):
            raise ctx.error(where + ("args",), f"args must be a list, got {_kind(cmd.args)}",
                            "write args: [--flag, value]")
        if cmd.variables is not None:
            if not isinstance(cmd.variables, Mapping):
                raise ctx.error(where + ("variables",), f"variables must be a mapping, got {_kind(cmd.variables)}")
            for name in cmd.variables:
                if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name == "args":
                    raise ctx.error(where + ("variables", name), f"variable name {name!r} is not usable",
                                    "use an identifier other than 'args'")

    def _norm_envs(self, ctx: _Ctx, where: Tuple[Any, ...], envs: Any) -> Tuple[ActionEnvironment, ...]:
        if envs is None:
            return ()
        pairs: List[Tuple[Tuple[Any, ...], Any, Any]] = []
        if isinstance(envs, Mapping):
            pairs = [(where + (scope,), scope, env) for scope, env in envs.items()]
        elif isinstance(envs, (list, tuple)):
            for k, item in enumerate(envs):
                if isinstance(item, ActionEnvironment):
                    pairs.append((where + (k,), item.scope, item.environment))
                else:
                    d = _check_keys(ctx, item, where + (k,), ("scope", "environment"), ("environment",),
                                    "an action environment")
                    pairs.append((where + (k,), d.get("scope", "any"), d["environment"]))
        else:
            raise ctx.error(where, f"environments must be a mapping like {{any: python_env}} or a list, "
                                   f"got {_kind(envs)}")
        out = []
        for path, scope, env in pairs:
            if scope not in _SCOPES:
                raise ctx.error(path, f"environment scope {scope!r} is not supported",
                                "use 'any' or 'main' (the scopes that run commands)")
            if isinstance(env, Environment):
                self._add_environment(ctx, path, env, inline=True)
                env = env.name
            if not isinstance(env, str) or env not in self.environments:
                raise ctx.error(path, f"unknown environment {env!r}",
                                f"{_suggest(env, self.environments)} (pass environments=[Environment(...)] "
                                f"to define more)")
            out.append(ActionEnvironment(env, scope))
        return tuple(out)

    def _add_environment(self, ctx: _Ctx, path: Tuple[Any, ...], env: Any, inline: bool = False) -> None:
        if not isinstance(env, Environment) or not isinstance(env.name, str) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in dict(env.executables).items()):
            raise ctx.error(path, f"not a valid environment: {_short(env)}",
                            "use Environment(name, executables={label: command})")
        known = self.environments.get(env.name)
        if inline and known is not None and known != env:
            raise ctx.error(path, f"environment {env.name!r} differs from the one already known by that name",
                            "give it another name")
        self.environments[env.name] = env

    # -- validation
    def _validate(self, ctx: _Ctx) -> List[_Compiled]:
        if not self.actions:
            raise ctx.error(("actions",), "the schema has no actions", "add at least one action with commands")
        inputs = {p.parameter: i for i, p in enumerate(self.inputs)}
        outputs = {p.parameter: i for i, p in enumerate(self.outputs)}
        for i, seq in enumerate(self.sequences):
            head = seq["path"].split(".")[1]
            if head not in inputs:
                raise ctx.error(("sequences", i, "path"), f"sequence path {seq['path']!r} is not a schema input",
                                f"{_suggest(head, inputs)}; sequences vary inputs only")
        for name, i in outputs.items():
            if name in inputs:
                raise ctx.error(("outputs", i), f"parameter {name!r} is both an input and an output",
                                "give the output a different name")
        producers: Dict[str, Tuple[Any, ...]] = {}
        for ai, action in enumerate(self.actions):
            for ci, cmd in enumerate(_commands(action)):
                for stream in ("stdout", "stderr"):
                    if getattr(cmd, stream) is not None:
                        where = ("actions", ai, "commands", ci, stream)
                        tok = _output_token(ctx, where, getattr(cmd, stream))
                        if tok.name in inputs:
                            raise ctx.error(where, f"parameter {tok.name!r} is a schema input and cannot be "
                                                   f"produced", "map the output to a new parameter")
                        if tok.name in producers:
                            raise ctx.error(where, f"parameter {tok.name!r} is already produced by "
                                                   f"{_fmt_path(producers[tok.name])}", "produce it once")
                        producers[tok.name] = where
        available = set(inputs)
        used: Set[str] = set()
        compiled = []
        for ai, action in enumerate(self.actions):
            exes = self._executables(ctx, ai, action)
            for ci, cmd in enumerate(_commands(action)):
                cc = self._compile_command(ctx, ("actions", ai, "commands", ci), cmd, exes)
                for name, use in cc.uses.items():
                    if name not in available:
                        later = producers.get(name)
                        fix = (f"it is produced only later, by {_fmt_path(later)}: reorder the actions" if later
                               else "add it to the schema inputs or map an earlier command's stdout to it")
                        raise ctx.error(use, f"parameter {name!r} has no source: it is not a schema input and no "
                                             f"earlier command produces it", fix)
                used |= set(cc.uses)
                available |= {tok.name for _, tok in cc.outputs}
                compiled.append(cc)
        for name, i in inputs.items():
            if name not in used:
                raise ctx.error(("inputs", i), f"schema input {name!r} is not used by any action",
                                f"remove it, or use <<parameter:{name}>> in a command")
        for name, i in outputs.items():
            if name not in producers:
                raise ctx.error(("outputs", i), f"schema output {name!r} is not produced by any action",
                                f"map a command's output to it: stdout: <<parameter:{name}>>")
        for name, where in producers.items():
            if name not in outputs and name not in used:
                raise ctx.error(where, f"parameter {name!r} is produced but is neither a schema output nor "
                                       f"used by a later command", f"add it to outputs, or use "
                                                                   f"<<parameter:{name}>> in a later command")
        return compiled

    def _executables(self, ctx: _Ctx, ai: int, action: SchemaAction) -> Dict[str, str]:
        exes: Dict[str, str] = {}
        owner: Dict[str, str] = {}
        for ae in _environments(action):
            env = self.environments[str(ae.environment)]
            for label, command in env.executables.items():
                if label in exes and exes[label] != command:
                    raise ctx.error(("actions", ai, "environments"), f"executable {label!r} is defined "
                                    f"differently by environments {owner[label]!r} and {env.name!r}",
                                    "keep one of them")
                exes[label], owner[label] = command, env.name
        return exes

    def _compile_command(self, ctx: _Ctx, where: Tuple[Any, ...], cmd: Command, exes: Dict[str, str]) -> _Compiled:
        uses: Dict[str, Tuple[Any, ...]] = {}

        env_refs: Set[str] = set()

        def compile_value(path: Tuple[Any, ...], value: Any, allow: Tuple[str, ...]) -> Any:
            if not isinstance(value, str):
                return value
            template = _Tpl(_parse_template(ctx, path, value))
            for tok in template:
                if isinstance(tok, _Token):
                    if tok.kind not in allow:
                        raise ctx.error(path, f"{tok.text} cannot be used here",
                                        "args and variables may only hold <<parameter:...>> tokens"
                                        if tok.kind != "variable" else f"a command variable is used in the "
                                                                       f"command string as {tok.text}")
                    delim = tok.opt("delim", " ") if tok.func == "join" else " "
                    if delim != " " and not set(delim) <= _PLAIN_REST:
                        raise ctx.error(path, f"the delimiter {delim!r} of {tok.text} is not plain",
                                        "use a space, or letters, digits and _ . / , : @ % + = -")
                    if tok.kind == "parameter":
                        uses.setdefault(tok.name, path)
            for m in _ENV_REF_RE.finditer(value):
                uses.setdefault(m.group(1), path)
                env_refs.add(m.group(1))
            return template

        template = compile_value(where + ("command",), cmd.command, ("parameter", "executable", "args", "variable"))
        args = [compile_value(where + ("args", i), a, ("parameter",)) for i, a in enumerate(cmd.args or ())]
        variables = {k: compile_value(where + ("variables", k), v, ("parameter",))
                     for k, v in (cmd.variables or {}).items()}
        kinds = {t.kind for t in template if isinstance(t, _Token)}
        for tok in template:
            if not isinstance(tok, _Token):
                continue
            if tok.kind == "executable" and tok.name not in exes:
                have = ", ".join(sorted(exes)) or "none: the action has no environments"
                raise ctx.error(where + ("command",), f"executable {tok.name!r} is not defined by the action's "
                                                      f"environments (labels: {have})",
                                "add an environment that defines it, e.g. environments: {any: python_env}")
            if tok.kind == "variable" and tok.name not in variables:
                known = ", ".join(variables) or "none"
                raise ctx.error(where + ("command",), f"{tok.text} is neither a known token nor one of the "
                                                      f"command's variables (variables: {known})",
                                f"tokens look like {_TOKEN_FORMS}")
        if cmd.args and "args" not in kinds:
            raise ctx.error(where + ("args",), "the command has args but its string has no <<args>>",
                            "put <<args>> where the arguments belong")
        outs = [(s, _output_token(ctx, where + (s,), getattr(cmd, s))) for s in ("stdout", "stderr")
                if getattr(cmd, s) is not None]
        return _Compiled(where, template, args, variables, outs, exes, uses, env_refs)

    # -- loading
    @classmethod
    def from_dict(cls, d: Mapping[str, Any],
                  environments: Union[None, Iterable[Environment], Mapping[str, Environment]] = None,
                  *, _source: Optional[str] = None, _marks: Optional[miniyaml.Marks] = None) -> "TaskSchema":
        """Build from plain data (as read from YAML/JSON/TOML); every problem is a `SchemaError`."""
        ctx = _Ctx(None, _source, _marks)
        if isinstance(d, Mapping) and isinstance(d.get("objective"), str):
            ctx.objective = d["objective"]
        _check_keys(ctx, d, (), ("objective", "inputs", "outputs", "actions", "sequences"),
                    ("objective", "actions"), "a task schema")
        return cls(d["objective"], d.get("inputs") or (), d.get("outputs") or (), d["actions"],
                   d.get("sequences"), environments, _ctx=ctx)

    @classmethod
    def from_file(cls, path: Union[str, "os.PathLike[str]"],
                  environments: Union[None, Iterable[Environment], Mapping[str, Environment]] = None
                  ) -> "TaskSchema":
        """Load a .yaml/.yml (YAML subset), .json or .toml (Python 3.11+) schema file."""
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in (".yaml", ".yml", ".json", ".toml"):
            raise SchemaError(f"{p}: unsupported schema file type {suffix or '(none)'!r}; use .yaml, .yml, .json "
                              f"or .toml")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SchemaError(f"{p}: cannot read the schema file ({e}); check the path") from None
        marks: Optional[miniyaml.Marks] = None
        if suffix in (".yaml", ".yml"):
            try:
                data, marks = miniyaml.loads_with_marks(text, str(p))
            except miniyaml.MiniYAMLError as e:
                raise SchemaError(f"{e}; fix the YAML (schema files use a strict YAML subset)") from None
        elif suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise SchemaError(f"{p}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
            except RecursionError:
                raise SchemaError(f"{p}: invalid JSON: nested too deeply; flatten the document") from None
        else:
            try:
                import tomllib  # type: ignore[import-not-found]
            except ImportError:
                raise SchemaError(f"{p}: TOML schema files need Python 3.11+ (tomllib); this is Python "
                                  f"{sys.version_info[0]}.{sys.version_info[1]}: use a .yaml or .json file") from None
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                raise SchemaError(f"{p}: invalid TOML: {e}") from None
        return cls.from_dict(data, environments, _source=str(p), _marks=marks)

    def to_dict(self) -> Dict[str, Any]:
        """Plain data that `from_dict` reads back (environments by name)."""
        def command(c: Command) -> Dict[str, Any]:
            d: Dict[str, Any] = {"command": c.command}
            for key in ("stdout", "stderr"):
                if getattr(c, key) is not None:
                    d[key] = getattr(c, key)
            if c.args is not None:
                d["args"] = list(c.args)
            if c.variables is not None:
                d["variables"] = dict(c.variables)
            return d

        actions = []
        for a in self.actions:
            ad: Dict[str, Any] = {"commands": [command(c) for c in _commands(a)]}
            if a.environments:
                ad["environments"] = {e.scope: e.environment for e in _environments(a)}
            actions.append(ad)
        out: Dict[str, Any] = {
            "objective": self.objective,
            "inputs": [{"parameter": i.parameter, **({} if i.required else {"default": i.default})}
                       for i in self.inputs],
            "outputs": [{"parameter": o.parameter} for o in self.outputs],
            "actions": actions,
        }
        if self.sequences:
            out["sequences"] = [dict(s) for s in self.sequences]
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskSchema) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"TaskSchema(objective={self.objective!r}, inputs={[i.parameter for i in self.inputs]}, "
                f"outputs={[o.parameter for o in self.outputs]}, actions={len(self.actions)})")

    # -- information
    def info_dict(self) -> Dict[str, Any]:
        """What `info` shows, as JSON-able data."""
        actions, k = [], 0
        for ai, action in enumerate(self.actions):
            ccs = self._compiled[k: k + len(action.commands)]
            k += len(action.commands)
            produced = [tok.name for cc in ccs for _, tok in cc.outputs]
            actions.append({
                "index": ai,
                "environments": {e.scope: e.environment for e in _environments(action)},
                "executables": dict(ccs[0].executables) if ccs else {},
                "inputs": sorted({n for cc in ccs for n in cc.uses} - set(produced)),
                "outputs": produced,
                "commands": self.to_dict()["actions"][ai]["commands"],
            })
        info: Dict[str, Any] = _jsonable({
            "objective": self.objective,
            "inputs": [{"parameter": i.parameter, "required": i.required,
                        **({} if i.required else {"default": i.default})} for i in self.inputs],
            "outputs": [{"parameter": o.parameter} for o in self.outputs],
            "actions": actions,
            "sequences": [dict(s) for s in self.sequences],
        })
        return info

    @property
    def info(self) -> str:
        """A human-readable summary, like hpcflow's `TaskSchema.info`."""
        d = self.info_dict()
        lines = [f"Task schema: {d['objective']}", "Inputs:"]
        width = max([len(i["parameter"]) for i in d["inputs"]] + [4])
        for i in d["inputs"]:
            note = "required" if i["required"] else f"default: {json.dumps(i['default'])}"
            lines.append(f"  {i['parameter']:<{width}}  {note}")
        if not d["inputs"]:
            lines.append("  (none)")
        lines.append("Outputs:")
        lines += [f"  {o['parameter']}" for o in d["outputs"]] or ["  (none)"]
        lines.append("Actions:")
        for a in d["actions"]:
            envs = ", ".join(f"{s}: {e}" for s, e in a["environments"].items()) or "(none)"
            lines.append(f"  [{a['index']}] environments: {envs}")
            for label, exe in a["executables"].items():
                lines.append(f"      executable {label}: {exe}")
            lines.append(f"      consumes: {', '.join(a['inputs']) or '-'}; produces: {', '.join(a['outputs']) or '-'}")
            for c in a["commands"]:
                lines.append("      $ " + c["command"].rstrip("\n").replace("\n", "\n        "))
                for key in ("args", "variables"):
                    if key in c:
                        lines.append(f"          {key}: {json.dumps(c[key])}")
                for key in ("stdout", "stderr"):
                    if key in c:
                        lines.append(f"          {key} -> {c[key]}")
        if d["sequences"]:
            lines.append("Sequences:")
            for s in d["sequences"]:
                lines.append(f"  {s['path']} (nesting_order {s['nesting_order']}): {json.dumps(s['values'])}")
        return "\n".join(lines)

    # -- running
    def resolve_inputs(self, inputs: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Inputs with defaults applied; an unknown name or a missing required input is a `SchemaError`."""
        ctx = _Ctx(self.objective)
        given = dict(inputs or {})
        known = [i.parameter for i in self.inputs]
        for name in given:
            if name not in known:
                names = f"inputs: {', '.join(known) or 'none'}"
                close = _closest(name, known)
                raise ctx.error((), f"unknown input {name!r}", f"did you mean {close!r}? ({names})" if close else names)
        out: Dict[str, Any] = {}
        for i in self.inputs:
            if i.parameter in given:
                out[i.parameter] = given[i.parameter]
            elif i.required:
                raise ctx.error((), f"missing required input {i.parameter!r}",
                                f"pass it: --input {i.parameter}=... on the command line, "
                                f"inputs={{{i.parameter!r}: ...}} in Python")
            else:
                out[i.parameter] = copy.deepcopy(i.default)
        return out

    def input_sets(self, inputs: Optional[Mapping[str, Any]] = None) -> List[Dict[str, Any]]:
        """The input dicts to run: one per element of the schema's `sequences` (one when it has none)."""
        return expand_sequences(dict(inputs or {}), self.sequences)

    def resolve_commands(self, inputs: Optional[Mapping[str, Any]] = None) -> List[str]:
        """The command lines a run would execute (dry run). A token whose value is only known once an
        earlier command has run (e.g. `<<parameter:p2>>` from its stdout) is left as it is.

        Every value these commands consume is checked here, so a run refuses a bad one before anything runs.
        """
        values = self.resolve_inputs(inputs)
        pending = {tok.name for cc in self._compiled for _, tok in cc.outputs}
        env, left_out = _environment(values)
        out = []
        for cc in self._compiled:
            try:
                out.append(self._render(cc, values, pending, env, left_out))
            except _ResolveError as e:
                raise _Ctx(self.objective).error(cc.where + ("command",), str(e), e.fix) from None
        return out

    def _render(self, cc: _Compiled, params: Mapping[str, Any], pending: Set[str], env: Mapping[str, str],
                left_out: Mapping[str, str]) -> str:
        unreadable = sorted(cc.env_refs & set(left_out))
        if unreadable:
            name = unreadable[0]
            raise _ResolveError(f"the command reads ${_ENV_PREFIX}{name}, but parameter {name!r} cannot be put in "
                                f"the environment: {left_out[name]}", "give it as a file or a shorter value")
        spans: List[Tuple[int, int, _Token]] = []
        line = ""

        def value(tok: _Token) -> str:
            return tok.text if tok.name in pending else _substitute(tok, _lookup(params, tok))

        def author_word(v: Any) -> str:  # one arg or variable: the schema author's text, one shell word
            if not isinstance(v, _Tpl):
                return shlex.quote(_text(v))
            return shlex.quote("".join(p if isinstance(p, str) else value(p) for p in v))

        for part in cc.template:
            if isinstance(part, str) or part.kind == "executable":
                line += part if isinstance(part, str) else cc.executables[part.name]
                continue
            if part.kind == "args":
                text = " ".join(author_word(a) for a in cc.args)
            elif part.kind == "variable":
                text = author_word(cc.variables[part.name])
            else:
                text = value(part)
            if text and not (part.kind == "parameter" and part.name in pending):
                spans.append((len(line), len(line) + len(text), part))
            line += text
        _check_names(line, spans, env)
        return line

    def run(self, inputs: Optional[Mapping[str, Any]], workdir: Union[str, "os.PathLike[str]"],
            timeout: Optional[float] = 600) -> TaskResult:
        """Run every command in order in `workdir`; raise `TaskFailed` (with the partial result) on failure.

        Inputs are checked and every command is resolved as far as the inputs allow before anything
        runs, so a bad input is a `SchemaError` and no half-run task.
        """
        values = self.resolve_inputs(inputs)
        self.resolve_commands(values)
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
        result = TaskResult(self.objective, copy.deepcopy(values))
        params = dict(values)
        deadline = None if timeout is None else time.monotonic() + timeout

        def fail(message: str) -> TaskFailed:
            result.status, result.error = "failed", message
            result.outputs = {o.parameter: params[o.parameter] for o in self.outputs if o.parameter in params}
            return TaskFailed(message, result)

        shell = shutil.which("bash") or shutil.which("sh") or "/bin/sh"
        project = os.getcwd()
        for cc in self._compiled:
            where = f"task schema {self.objective!r}, {_fmt_path(cc.where)}"
            env, left_out = _environment(params)
            try:
                line = self._render(cc, params, set(), env, left_out)
            except _ResolveError as e:  # a value captured from an earlier command's output
                raise fail(f"{where}: not started, as a value an earlier command printed is refused (the "
                           f"commands before it have run): {e}; {e.fix}") from None
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise fail(f"{where}: not started: the task's timeout of {timeout:g} s was used up by the "
                           f"commands before it; raise timeout")
            env[PROJECT_ENV] = project  # commands run in their element's folder: this names where `task run` ran
            try:
                code, out, err, ms, timed_out = _execute(shell, line, wd, remaining, env)
            except OSError as e:  # e.g. an argument list too long for the OS
                raise fail(f"{where}: could not start {_short(line, 200)}: {e}") from None
            result.commands.append({"command": line, "exit_code": code, "stdout": _truncate(out),
                                    "stderr": _truncate(err), "duration_ms": ms})
            shown = _short(line, 200)
            if timed_out:
                raise fail(f"{where}: timed out after {ms / 1000:.1f} s (task timeout {timeout:g} s) and its "
                           f"process group was killed: {shown}; raise timeout or make the command faster")
            tail = " ".join(err.strip()[-300:].split("\n")) or "(empty)"
            if code != 0:
                hint = (f" (commands run in the element's folder {wd}; ${PROJECT_ENV} names the folder `task run` "
                        f"ran in)") if "No such file" in err and str(wd) in err else ""
                raise fail(f"{where}: exit code {code} from {shown}; stderr ends with: {tail}{hint}")
            for stream, tok in cc.outputs:
                try:
                    params[tok.name] = _parse_output(tok, stream, out if stream == "stdout" else err)
                except _ResolveError as e:
                    raise fail(f"{where}: {e}" + (f"; stderr ends with: {tail}" if err.strip() else "")) from None
        result.outputs = {o.parameter: params[o.parameter] for o in self.outputs}
        return result


def _execute(shell: str, line: str, cwd: Path, timeout: Optional[float], env: Mapping[str, str]
             ) -> Tuple[int, str, str, float, bool]:
    """Run one command line; `communicate` reads both pipes at once, so huge outputs cannot deadlock."""
    start = time.monotonic()
    posix = os.name == "posix"
    pipefail = ["-o", "pipefail"] if os.path.basename(shell) == "bash" else []  # `a | tail -1` fails when a does
    proc = subprocess.Popen([shell, *pipefail, "-c", line], cwd=str(cwd), env=dict(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=posix)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc, posix)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a child left the group and holds the pipes: stop waiting
            for pipe in (proc.stdout, proc.stderr):
                if pipe:
                    pipe.close()
            out, err = b"", b""
            proc.wait()
    except BaseException:
        _kill_group(proc, posix)
        proc.wait()
        raise
    ms = round((time.monotonic() - start) * 1000, 1)
    return (proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), ms, timed_out)


def _kill_group(proc: "subprocess.Popen[bytes]", posix: bool) -> None:
    try:
        if posix:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


def _commands(action: SchemaAction) -> Sequence[Command]:
    """A normalised action's commands (TaskSchema stores only Command objects)."""
    return cast(Sequence[Command], action.commands)


def _environments(action: SchemaAction) -> Sequence[ActionEnvironment]:
    """A normalised action's environments (TaskSchema stores only ActionEnvironment objects)."""
    return cast(Sequence[ActionEnvironment], action.environments or ())


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))

