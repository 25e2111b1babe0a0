"""Post-run actions: operations registered during a run and executed after it, with answers asked for.

An action is a dataclass (subclass `Action`: its annotated class attributes are its parameters, no
decorator needed) with `describe()` and `execute(interaction)`::

    from exprag_plus import Action, Experiment

    class ExportToHub(Action):
        checkpoint: str
        default_name: str = "my-model"

        def describe(self) -> str:
            return "Export the checkpoint to the Hub or a folder"

        def execute(self, interaction):
            target = interaction.choice("target", "Export to:", ["HF Hub", "Local folder"])
            if target == "HF Hub":
                name = interaction.text("name", "Hub model name:", default=self.default_name)
                private = interaction.checkbox("private", "Private repo?", default=False)
                return push(self.checkpoint, name, private)      # a JSON-able result is recorded
            folder = interaction.text("folder", "Output folder:")
            return copy(self.checkpoint, folder)

    if __name__ == "__main__":          # loading the action later imports this file: guard the run
        with Experiment("train") as exp:
            ...
            exp.add_action(ExportToHub(checkpoint="ckpt.pt"))

Then ``exprag-plus actions run latest ExportToHub`` asks on the terminal (numbered choices, the number or
the text, `y/n` for checkboxes; each prompt shows the ``--set key=...`` that would prefill it), and
``--set target="Local folder" --set folder=out`` (or ``--no-input``) runs it without questions. Every
execution appends an `action_run` record: the answers actually used (defaults included), ok/error, the
error, the duration and the returned value.

Rules a user can rely on:

* `default=None` means "no default": such a question must be answered (prefilled, or on a terminal);
  without a terminal it is an error naming the key, the label and what it accepts. Booleans are
  true/false, yes/no, y/n, 1/0 in any case; a choice is one of the listed strings (case-insensitive when
  that is unambiguous; on a terminal also its number).
* Prefilled keys are checked against the questions the action's source asks (a static scan of its
  class for literal keys): a key it never asks is refused before anything runs, with a "did you mean".
  When the scan cannot be sure (computed keys, the interaction handed to another function) the action
  runs, and a key it did not ask is reported as an error afterwards.
* The class is recorded as ``module:QualName``. A class defined in the script run as ``__main__`` is
  recorded under the name its file imports as (``export_best_model`` for
  ``python examples/export_best_model.py``) plus its ``file``, and is loaded from that file; such a
  script must keep its experiment under ``if __name__ == "__main__":`` (an `Experiment` created while
  loading an action is refused, so a forgotten guard is an error rather than a second run).
* Classes are imported with the run's script folder, working directory and git top level on
  `sys.path`, taken relative to the run's top level (or folder) and placed in the current project (the
  current git top level, else the current folder), or with ``code="run"`` in the run's own commit in a
  temporary git worktree; a path the run file names is never imported from as it stands.

A custom backend (a web form, a chat bot) subclasses `Interaction` and overrides `ask`; prefilled
answers, validation, defaults and recording then come for free::

    class WebFormInteraction(Interaction):
        def __init__(self, form, answers=None):
            super().__init__(answers)
            self.form = form

        def ask(self, question):
            while True:
                raw = self.form.prompt(label=question.label, kind=question.kind,
                                       choices=[str(c) for c in question.choices],
                                       default=question.default)   # blocks until submitted
                if raw == "" and question.default is not None:
                    return question.default
                try:
                    return question.parse(raw)
                except ValueError as exc:
                    self.form.flash(str(exc))                       # ask again

Overriding `choice`/`checkbox`/`text` wholesale also works (the values they return are recorded too).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import datetime as _dt
import difflib
import enum
import functools
import importlib
import importlib.util
import inspect
import os
import pathlib
import re
import sys
import textwrap
import time
import traceback
import typing
import warnings
from typing import (Any, Callable, ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Set, TextIO, Tuple,
                    TYPE_CHECKING, cast)

from . import appender, git, records, redact

if TYPE_CHECKING:  # pragma: no cover
    from .store import Run

__all__ = [
    "Action", "Interaction", "PrefilledInteraction", "TerminalInteraction", "Question",
    "Actions", "ActionLoadError", "ActionNotFound", "ActionFailed", "AnswerError",
    "run_action", "load_action", "parse_set", "action_fields",
]

_TRACEBACK_TAIL = 4000
_TRUE = ("true", "yes", "y", "1")
_FALSE = ("false", "no", "n", "0")
_KINDS = ("choice", "checkbox", "text")
_NAME_BAD = re.compile(r"[\x00-\x1f\x7f]")


# --- errors ----------------------------------------------------------------------------------------


class AnswerError(ValueError):
    """An answer that is missing, malformed or never asked for (CLI exit 2).

    When raised by `run_action`, `record` holds the `action_run` record that was written (or None when
    nothing ran)."""

    record: Optional[Dict[str, Any]] = None


class ActionLoadError(ImportError):
    """An action's class cannot be imported or rebuilt; the message names the module and the reason."""

    def __init__(self, action: str, class_path: str, reason: str) -> None:
        self.action = action
        self.class_path = class_path
        self.reason = reason
        module = class_path.partition(":")[0]
        super().__init__(f"cannot load action {action!r} ({class_path}): {reason}", name=module or None)


class ActionNotFound(KeyError):
    """No action of that name in the run; the message lists the names and a near match."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such action"


class ActionFailed(RuntimeError):
    """The action raised; its `action_run` record (status error) is in `record`, the exception in `__cause__`."""

    def __init__(self, message: str, record: Dict[str, Any]) -> None:
        super().__init__(message)
        self.record = record


# --- Action ----------------------------------------------------------------------------------------


class Action:
    """A post-run operation. Subclasses are dataclasses automatically (annotated attributes are parameters).

    Dataclass options go in the class statement: ``class Export(Action, frozen=True)``. An explicit
    ``@dataclass`` on top also works. Parameters must be JSON-able (or Path, Enum, datetime, tuple, set,
    nested dataclasses: rebuilt from the field types when loading).
    """

    _exprag_doc: ClassVar[Optional[str]] = None
    _exprag_auto: ClassVar[Any] = None

    def __init_subclass__(cls, **options: Any) -> None:
        super().__init_subclass__()
        cls._exprag_doc = cls.__dict__.get("__doc__")
        fields = {k: v for k, v in cls.__dict__.items() if isinstance(v, dataclasses.Field)}
        dataclasses.dataclass(cls, **options)
        # Keep the field objects as class attributes: a later explicit @dataclass then sees the same
        # fields (defaults, factories, metadata) instead of the plain values the first pass left.
        for k, v in fields.items():
            setattr(cls, k, v)
        cls._exprag_auto = (cls.__dict__.get("__dataclass_params__"), cls.__dict__.get("__init__"))

    def __new__(cls, *args: Any, **kwargs: Any) -> "Action":
        auto = cls.__dict__.get("_exprag_auto")
        params = cls.__dict__.get("__dataclass_params__")
        if auto is not None and params is not auto[0] and getattr(params, "frozen", False) \
                and not getattr(auto[0], "frozen", False) and cls.__dict__.get("__init__") is auto[1]:
            raise TypeError(f"{cls.__name__}: Action subclasses are dataclasses already; for a frozen one write "
                            f"`class {cls.__name__}(Action, frozen=True)` instead of @dataclass(frozen=True)")
        return super().__new__(cls)

    def describe(self) -> str:
        """One line saying what the action does (default: the class docstring's first line, else its name)."""
        doc = type(self).__dict__.get("_exprag_doc") or ""
        first = doc.strip().splitlines()[0].strip() if doc.strip() else ""
        return first or type(self).__name__

    def execute(self, interaction: "Interaction") -> Any:
        """Do the work, asking through `interaction`; a JSON-able return value is recorded."""
        raise NotImplementedError(f"{type(self).__qualname__} does not implement execute(interaction)")


# --- questions -------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _quote(label: str) -> str:
    """A label in double quotes (labels often hold an apostrophe, keys never do)."""
    return '"' + label.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclasses.dataclass(frozen=True)
class Question:
    """One question an action asks: `kind` is choice, checkbox or text; `default` None means none."""

    kind: str
    key: str
    label: str
    choices: Tuple[Any, ...] = ()
    default: Any = None

    @classmethod
    def make(cls, kind: str, key: Any, label: Any, choices: Sequence[Any] = (), default: Any = None) -> "Question":
        """A checked question; a malformed one is the action's bug (ValueError), not a bad answer."""
        if not isinstance(key, str) or not key or "=" in key or _NAME_BAD.search(key):
            raise ValueError(f"question key must be a non-empty string without '=' or control characters, not {key!r}")
        label = str(label)
        if kind == "choice":
            if isinstance(choices, (str, bytes)) or not hasattr(choices, "__iter__"):
                raise ValueError(f"choice {key!r}: choices must be a list of strings, not {type(choices).__name__}")
            choices = tuple(choices)
            if not choices:
                raise ValueError(f"choice {key!r} has no choices")
            texts = [str(c) for c in choices]
            if len(set(texts)) != len(texts):
                raise ValueError(f"choice {key!r} lists the same choice twice")
            if default is not None and default not in choices and str(default) not in texts:
                raise ValueError(f"choice {key!r}: default {default!r} is not one of the choices")
            if default is not None and default not in choices:
                default = choices[texts.index(str(default))]
        elif kind == "checkbox":
            if default is not None and not isinstance(default, bool):
                raise ValueError(f"checkbox {key!r}: default must be True, False or None, not {default!r}")
            choices = ()
        elif kind == "text":
            if default is not None and not isinstance(default, str):
                default = str(default)
            choices = ()
        else:
            raise ValueError(f"unknown question kind {kind!r}")
        return cls(kind, key, label, tuple(choices), default)

    def accepts(self) -> str:
        """What an answer may be, in words."""
        if self.kind == "choice":
            return "one of " + ", ".join(repr(str(c)) for c in self.choices)
        if self.kind == "checkbox":
            return "true or false (also yes/no, y/n, 1/0)"
        return "any text"

    def hint(self) -> str:
        """The command-line option that would prefill this question."""
        return f"--set {self.key}=..."

    def parse(self, raw: Any, *, numbered: bool = False) -> Any:
        """The answer that `raw` gives (text, or an already typed value); ValueError says what is wrong.

        `numbered` also accepts a choice's number (1-based), as the terminal lists them."""
        if self.kind == "checkbox":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError(f"{_show(str(raw))} is not a boolean; use true/false, yes/no, y/n or 1/0")
        if self.kind == "text":
            return raw if isinstance(raw, str) else str(raw)
        if raw in self.choices and not isinstance(raw, bool):
            return self.choices[self.choices.index(raw)]
        text = str(raw)
        texts = [str(c) for c in self.choices]
        if text in texts:
            return self.choices[texts.index(text)]
        folded = [i for i, t in enumerate(texts) if t.casefold() == text.strip().casefold()]
        if len(folded) == 1:
            return self.choices[folded[0]]
        if numbered and text.strip().isdecimal() and 1 <= int(text.strip()) <= len(texts):
            return self.choices[int(text.strip()) - 1]
        options = ", ".join(repr(t) for t in texts)
        if numbered:
            raise ValueError(f"{_show(text)} is not a choice: type a number from 1 to {len(texts)} or one of {options}")
        raise ValueError(f"{_show(text)} is not a choice; use one of {options}")


# --- Interaction -----------------------------------------------------------------------------------


def _recording(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a backend's own choice/checkbox/text so the value it returns is recorded."""

    @functools.wraps(fn)
    def wrapper(self: "Interaction", key: str, *args: Any, **kwargs: Any) -> Any:
        value = fn(self, key, *args, **kwargs)
        self.__dict__.setdefault("answers", {})[key] = value
        return value

    wrapper._exprag_records = True  # type: ignore[attr-defined]
    return wrapper


class Interaction:
    """How an action asks questions. This base answers from prefilled `answers` and defaults only.

    `answers` maps keys to text (as `--set` gives them) or typed values. After an execution, `answers`
    holds what was actually used, defaults included. Subclasses override `ask(question)`.
    """

    def __init__(self, answers: Optional[Mapping[str, Any]] = None, *, source: str = "answers",
                 reason: Optional[str] = None) -> None:
        self.prefilled: Dict[str, Any] = dict(answers or {})
        self.answers: Dict[str, Any] = {}
        self.source = source      # how prefilled answers were given: "answers" (Python) or "--set" (CLI)
        self.reason = reason      # why nobody can be asked, for the missing-answer message
        self.action_name: Optional[str] = None
        self.error: Optional[AnswerError] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _KINDS:
            fn = cls.__dict__.get(name)
            if callable(fn) and not getattr(fn, "_exprag_records", False):
                setattr(cls, name, _recording(fn))

    # --- the protocol actions call -------------------------------------------------------------
    def choice(self, key: str, label: str, choices: Sequence[Any], *, default: Any = None) -> Any:
        """One of `choices` (returned as listed)."""
        return self._answer(Question.make("choice", key, label, choices, default))

    def checkbox(self, key: str, label: str, *, default: Optional[bool] = None) -> bool:
        """A yes/no answer."""
        return self._answer(Question.make("checkbox", key, label, (), default))

    def text(self, key: str, label: str, *, default: Optional[str] = None) -> str:
        """Free text."""
        return self._answer(Question.make("text", key, label, (), default))

    # --- what backends override ----------------------------------------------------------------
    def ask(self, question: Question) -> Any:
        """Answer a question that has no prefilled answer: here, its default, else an AnswerError."""
        if question.default is not None:
            return question.default
        raise self.missing(question)

    def prefilled_answer(self, question: Question, value: Any) -> None:
        """Called when a prefilled answer is used (the terminal shows it)."""

    # --- helpers -------------------------------------------------------------------------------
    def reset(self, action_name: Optional[str] = None) -> None:
        """Forget the answers of a previous execution (run_action calls this)."""
        self.__dict__.setdefault("prefilled", {})
        self.__dict__.setdefault("source", "answers")
        self.__dict__.setdefault("reason", None)
        self.answers = {}
        self.action_name = action_name
        self.error = None

    def unused(self) -> List[str]:
        """Prefilled keys no question has asked (so far)."""
        used = self.__dict__.get("answers", {})
        return [k for k in self.__dict__.get("prefilled", {}) if k not in used]

    def _who(self) -> str:
        name = self.__dict__.get("action_name")
        return f"action {name!r}" if name else "the action"

    def _given(self, key: str, raw: Any) -> str:
        if self.__dict__.get("source") == "--set":
            return f"--set {key}={_show(str(raw)) if isinstance(raw, str) else _show(raw)}"
        return f"answers[{key!r}]={raw!r}"

    def fail(self, message: str) -> AnswerError:
        """An AnswerError, remembered even if the action's code swallows it."""
        exc = AnswerError(message)
        if self.__dict__.get("error") is None:
            self.error = exc
        return exc

    def missing(self, question: Question) -> AnswerError:
        """The error for a question nobody can answer: key, label, what it accepts, how to give it."""
        if self.__dict__.get("source") == "--set":
            how = f"pass --set {question.key}=..."
        else:
            how = f"give answers={{{question.key!r}: ...}}"
        msg = f"{self._who()} needs an answer for {question.key!r} ({_quote(question.label)}): {question.accepts()}; {how}"
        near = difflib.get_close_matches(question.key, self.unused(), n=1, cutoff=0.6)
        if near:
            msg += f" (given instead: {near[0]!r}?)"
        reason = self.__dict__.get("reason")
        if reason:
            msg += f" ({reason})"
        return self.fail(msg)

    def _answer(self, question: Question) -> Any:
        prefilled = self.__dict__.setdefault("prefilled", {})
        if question.key in prefilled:
            raw = prefilled[question.key]
            try:
                value = question.parse(raw)
            except ValueError:
                if question.kind == "choice":
                    what = "is not a valid choice for"
                    detail = "use one of " + ", ".join(repr(str(c)) for c in question.choices)
                elif question.kind == "checkbox":
                    what, detail = "is not a boolean for", "use true/false, yes/no, y/n or 1/0"
                else:
                    what, detail = "is not valid for", question.accepts()
                raise self.fail(f"{self._who()}: {self._given(question.key, raw)} {what} "
                                f"{_quote(question.label)}; {detail}") from None
            self.prefilled_answer(question, value)
        else:
            value = self.ask(question)
        self.__dict__.setdefault("answers", {})[question.key] = value
        return value


class PrefilledInteraction(Interaction):
    """Answers only from prefilled answers and defaults (`--set`, `--no-input`, no terminal)."""


class TerminalInteraction(Interaction):
    """Asks on a terminal: numbered choices (the number or the text), y/n checkboxes, text with defaults.

    Prompts go to `output` (default stderr, so stdout stays for results); answers are read from `input`
    (default stdin). An invalid answer is explained and asked again; end of input is an AnswerError.
    """

    def __init__(self, answers: Optional[Mapping[str, Any]] = None, *, source: str = "--set",
                 input: Optional[TextIO] = None, output: Optional[TextIO] = None) -> None:
        super().__init__(answers, source=source)
        self.input = input if input is not None else sys.stdin
        self.output = output if output is not None else sys.stderr

    def _write(self, text: str) -> None:
        self.output.write(text)
        self.output.flush()

    def prefilled_answer(self, question: Question, value: Any) -> None:
        shown = ("yes" if value else "no") if question.kind == "checkbox" else str(value)
        self._write(f"{question.label} {shown}  (from --set {question.key})\n")

    def ask(self, question: Question) -> Any:
        q, d = question, question.default
        hint = f"(prefill: {q.hint()})"
        # Numbers stand for choices unless a choice is itself a number that would name another one.
        n = len(q.choices)
        numbered = not any(str(c).strip().isdecimal() and int(str(c)) != i and 1 <= int(str(c)) <= n
                           for i, c in enumerate(q.choices, 1))
        if q.kind == "choice" and numbered:
            self._write(f"{q.label}  {hint}\n" + "".join(f"  {i}) {c}\n" for i, c in enumerate(q.choices, 1)))
            prompt = f"choose 1-{len(q.choices)}" + (f" [Enter: {d}]" if d is not None else "") + ": "
        elif q.kind == "choice":
            self._write(f"{q.label}  {hint}\n" + "".join(f"  - {c}\n" for c in q.choices))
            prompt = "type one of them" + (f" [Enter: {d}]" if d is not None else "") + ": "
        elif q.kind == "checkbox":
            yn = "y/n" if d is None else ("Y/n" if d else "y/N")
            prompt = f"{q.label} [{yn}]  {hint}: "
        else:
            prompt = f"{q.label}" + (f" [Enter: {d}]" if d is not None else "") + f"  {hint}: "
        while True:
            self._write(prompt)
            line = self.input.readline()
            if not line:
                self._write("\n")
                raise self.fail(f"{self._who()}: no answer for {q.key!r} ({q.label!r}): end of input")
            raw = line.rstrip("\r\n").strip()
            if raw == "":
                if d is not None:
                    return d
                self._write("  an answer is needed\n")
                continue
            try:
                return q.parse(raw, numbered=numbered)
            except ValueError as exc:
                self._write(f"  {exc}; try again\n")


# --- registering ----------------------------------------------------------------------------------


def _resolve_qualname(obj: Any, qualname: str) -> Any:
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _script_module_name(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem.isidentifier():
        return stem
    return re.sub(r"\W", "_", stem if not stem[:1].isdigit() else "_" + stem) or "_script"


def _class_path(cls: type) -> Tuple[str, Optional[str]]:
    """(``module:QualName``, file for a class of the ``__main__`` script, else None)."""
    qual = cls.__qualname__
    if "<locals>" in qual:
        raise ValueError(f"action class {qual} is defined inside a function: define it at module level "
                         "so that it can be imported when the action runs")
    module = cls.__module__
    mod = sys.modules.get(module)
    try:
        found = _resolve_qualname(mod, qual) if mod is not None else None
    except AttributeError:
        found = None
    if found is not cls:
        raise ValueError(f"action class {module}:{qual} cannot be found again under that name "
                         "(redefined or shadowed?): define it once, at module level")
    if module != "__main__":
        return f"{module}:{qual}", None
    spec = getattr(mod, "__spec__", None)
    if spec is not None and getattr(spec, "name", None) and spec.name != "__main__":
        return f"{spec.name}:{qual}", None  # python -m pkg.mod: importable by that name
    file = getattr(mod, "__file__", None)
    if not file:
        raise ValueError(f"action class {qual} is defined in __main__ without a file (python -c, a notebook or "
                         "the REPL), so it cannot be imported later: define it in a module or a script file")
    file = os.path.abspath(file)
    return f"{_script_module_name(file)}:{qual}", file


def _non_json(value: Any, path: str = "") -> Optional[str]:
    """The path of the first value to_json could only store as a repr."""
    if isinstance(value, dict):
        if set(value) == {"__repr__"}:
            return path or "(the value)"
        for k, v in value.items():
            found = _non_json(v, f"{path}.{k}" if path else str(k))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _non_json(v, f"{path}.{i}")
            if found:
                return found
    return None


def action_fields(action: Any, name: Optional[str] = None) -> Dict[str, Any]:
    """The fields of an `action` record for `action` (validated): name, class, params, description[, file]."""
    if not isinstance(action, Action):
        what = "a class" if isinstance(action, type) else f"a {type(action).__name__}"
        hint = " (instantiate it: add_action(MyAction(...)))" if isinstance(action, type) and issubclass(action, Action) else ""
        raise TypeError(f"add_action() takes an exprag_plus.Action instance, not {what}{hint}")
    cls = type(action)
    if name is None:
        name = cls.__name__
    if not isinstance(name, str) or not name.strip() or name != name.strip() or name.startswith("-") \
            or _NAME_BAD.search(name):
        raise ValueError(f"action name must be a non-empty string without surrounding spaces, control "
                         f"characters or a leading '-', not {name!r}")
    class_path, file = _class_path(cls)
    params: Dict[str, Any] = {}
    for f in dataclasses.fields(cast(Any, action)):
        if f.init:
            params[f.name] = getattr(action, f.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoded = records.to_json(params)
    bad = _non_json(encoded)
    if bad:
        top = bad.split(".", 1)[0]
        raise ValueError(f"action {name!r}: parameter {bad!r} ({type(params.get(top)).__name__}) cannot be stored "
                         "as JSON; give the action what it needs to find it later (a path, a run id, a name)")
    description = action.describe()
    fields: Dict[str, Any] = {"name": name, "class": class_path, "params": encoded,
                              "description": str(description) if description is not None else ""}
    if file:
        fields["file"] = file
    return fields


# --- reading the records ---------------------------------------------------------------------------


def action_records(recs: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """name -> {record, executions}: every registered action (first registration wins) and its action_runs."""
    out: Dict[str, Dict[str, Any]] = {}
    for r in recs:
        t = r.get("type")
        name = r.get("name")
        if not isinstance(name, str):
            continue
        if t == "action" and name not in out:
            out[name] = {"record": r, "executions": []}
        elif t == "action_run":
            out.setdefault(name, {"record": None, "executions": []})["executions"].append(r)
    return {k: v for k, v in out.items() if v["record"] is not None}


def _may_be_action(line: bytes) -> bool:
    """Whether a line can hold an action record however it is spelled: the word, or a \\u escape."""
    return b"action" in line or b"\\u" in line


def scan_file(path: str) -> Tuple[Optional[Dict[str, Any]], Dict[str, Dict[str, Any]]]:
    """(run_start, action_records) of one run file, parsing only the lines that can be action records."""
    from . import store

    recs = []
    start = None
    for lineno, line, last in store.iter_lines(path):
        if lineno == 1 or _may_be_action(line):
            rec = store.parse_line(line, path, lineno, last)
            if rec is None:
                continue
            if lineno == 1 and rec.get("type") == "run_start":
                start = rec
            recs.append(rec)
    return start, action_records(recs)


def action_row(run_id: str, run_name: str, name: str, entry: Dict[str, Any]) -> Dict[str, Any]:
    """One row of `actions list`: what the action is and how its executions went."""
    from . import ids

    rec, runs = entry["record"], entry["executions"]
    last = runs[-1] if runs else None
    return {"run_id": run_id, "short_id": ids.short_id(run_id), "run_name": run_name, "name": name,
            "class": rec.get("class"), "description": rec.get("description") or "",
            "params": records.from_json(rec.get("params") or {}), "registered": rec.get("time"),
            "times_run": len(runs), "last_status": last.get("status") if last else None,
            "last_time": last.get("time") if last else None}


def listing(root: str, run: Optional["Run"] = None) -> Dict[str, Any]:
    """Every registered action of one run, or of every run in `root` (newest run first)."""
    from . import ids

    if run is not None:
        rows = [action_row(run.run_id, run.name, name, entry)
                for name, entry in action_records(run.records).items()]
        return {"actions": rows, "runs": 1}
    files = ids.run_files(root)
    rows = []
    for path in reversed(files):
        try:
            start, table = scan_file(path)
        except OSError as exc:
            warnings.warn(f"{path}: unreadable ({exc.strerror or exc})", stacklevel=2)
            continue
        run_id = (start or {}).get("run_id") or os.path.basename(path)[: -len(ids.SUFFIX)]
        rows += [action_row(run_id, str((start or {}).get("name", "")), name, entry) for name, entry in table.items()]
    return {"actions": rows, "runs": len(files)}


def _not_found(run: "Run", name: str, names: Sequence[str]) -> ActionNotFound:
    if not names:
        return ActionNotFound(f"run {run.short_id} has no actions (none was registered with exp.add_action)")
    folded = name.casefold()
    near = ([n for n in names if n.casefold() == folded]
            or [n for n in names if n.casefold().startswith(folded)][:1]
            or difflib.get_close_matches(name, names, n=1, cutoff=0.6))
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return ActionNotFound(f"run {run.short_id} has no action {name!r}{hint} (actions: {', '.join(names)})")


class Actions(Mapping[str, Action]):
    """A run's actions by name. Listing reads only the records; getting an item imports its class.

    An action that cannot be imported raises ActionLoadError for that name only.
    """

    def __init__(self, run: "Run") -> None:
        self.run = run
        self._table = action_records(run.records)
        self._loaded: Dict[str, Action] = {}

    def __getitem__(self, name: str) -> Action:
        if name not in self._table:
            raise _not_found(self.run, name, list(self._table))
        if name not in self._loaded:
            self._loaded[name] = load_action(self.run, name)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def record(self, name: str) -> Dict[str, Any]:
        """The `action` record (class, params, description...), without importing anything."""
        if name not in self._table:
            raise _not_found(self.run, name, list(self._table))
        return self._table[name]["record"]

    def executions(self, name: str) -> List[Dict[str, Any]]:
        """The action's `action_run` records, oldest first."""
        self.record(name)
        return list(self._table[name]["executions"])

    def __repr__(self) -> str:
        return f"<Actions of run {self.run.short_id}: {', '.join(self._table) or 'none'}>"


# --- where the code comes from ---------------------------------------------------------------------


def _under(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([os.path.realpath(path), os.path.realpath(folder)]) == os.path.realpath(folder)
    except ValueError:
        return False


class _Code:
    """The run's recorded places (cwd, script folder, git top level) mapped to where code may be imported
    from: the current project (the current git top level, else the current folder) for code="current",
    the run's checked-out commit for code="run". A run file is data, possibly copied from elsewhere: a
    path it names is never imported from as such."""

    def __init__(self, run: "Run", mode: str, keep: bool) -> None:
        if mode not in ("current", "run"):
            raise ValueError(f"code must be 'current' or 'run', not {mode!r}")
        self.run = run
        self.mode = mode
        self.keep = keep
        proc = run.process
        self.cwd: Optional[str] = proc.get("cwd") if isinstance(proc.get("cwd"), str) else None
        g = run.git or {}
        top = g.get("toplevel") if isinstance(g.get("toplevel"), str) else None
        if not top and self.cwd:
            top = git.toplevel(self.cwd)
        self.top = top
        self.worktree: Optional[str] = None
        self.commit: Optional[str] = None
        here = os.getcwd()
        self.here = git.toplevel(here) or here  # where current code lives

    def open(self) -> None:
        if self.mode != "run":
            return
        g = self.run.git
        if not g:
            raise ValueError(f"run {self.run.short_id} recorded no git state ({self.run.git_error or 'not in a repository'}): "
                             "use --code current")
        if not g.get("commit"):
            raise ValueError(f"run {self.run.short_id} has no commit holding its code "
                             f"({self.run.git_error or 'snapshot failed'}): use --code current")
        here = git.toplevel(os.getcwd())
        if here and git.commit_exists(here, g["commit"]):
            repo: Optional[str] = here
        else:
            repo = self.top if self.top and os.path.isdir(self.top) and git.toplevel(self.top) else here
        if not repo:
            raise git.GitError(f"the run's repository {self.top or '(unknown)'} is gone and the current folder "
                               "is not in a git repository")
        self.commit = g["commit"]
        self.worktree = git.add_worktree(repo, g["commit"])
        self._repo = repo

    def close(self) -> None:
        if self.worktree and not self.keep:
            try:
                git.remove_worktree(self._repo, self.worktree)
            except git.GitError as exc:
                warnings.warn(f"exprag-plus: could not remove the worktree {self.worktree}: {exc}")
            self.worktree = None

    def map(self, path: Optional[str]) -> Optional[str]:
        """Where a recorded path's code is now: its twin under the current project (current code) or in
        the worktree (run code); None when it has none there."""
        if not path:
            return None
        if self.mode == "run":
            base, target = self.top, self.worktree
        else:
            base, target = self.top or self.cwd, self.here
        if not base or not target:
            return None
        if _under(path, base):
            rel = os.path.relpath(os.path.realpath(path), os.path.realpath(base))
            path = os.path.normpath(os.path.join(target, rel))
        return path if _under(path, target) else None

    def search_path(self) -> List[str]:
        """sys.path entries: the run's script folder (its sys.path[0]), working directory and git top level."""
        out: List[str] = []
        proc = self.run.process
        argv = proc.get("argv") or []
        first: Optional[str] = None
        if proc.get("module") or not argv or argv[0] in ("-c", "-m", ""):
            first = self.cwd
        elif isinstance(argv[0], str) and self.cwd:
            first = os.path.dirname(os.path.join(self.cwd, argv[0]))
        for p in (first, self.cwd, self.top):
            p = self.map(p)
            if p and os.path.isdir(p) and p not in out:
                out.append(p)
        return out


def _no_new_runs(module: str) -> "contextlib.AbstractContextManager[None]":
    """While importing an action's module, creating an Experiment (an unguarded script) is an error."""
    return appender.refusing_new_runs(
        "importing it started a new Experiment: keep the script's run under "
        "`if __name__ == \"__main__\":` so that loading its actions does not run it again")


@contextlib.contextmanager
def _sys_path(entries: Sequence[str]) -> Iterator[None]:
    added = [p for p in entries if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            try:
                sys.path.remove(p)
            except ValueError:
                pass


def _same_file(a: Optional[str], b: Optional[str]) -> bool:
    if not a or not b:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _forget_modules(before: Set[str], folders: Sequence[str]) -> None:
    """Drop the modules an execution imported from the run's folders (never an installed package), so that
    the next execution in this process imports the code as it is then, and run code never outlives its
    worktree."""
    for k in [k for k in sys.modules if k not in before]:
        file = getattr(sys.modules[k], "__file__", None)
        if not isinstance(file, str) or not file.endswith(".py") \
                or {"site-packages", "dist-packages"} & set(pathlib.PurePath(file).parts):
            continue
        if any(_under(file, f) for f in folders):
            sys.modules.pop(k, None)


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    ours = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = [f for f in tb if "importlib" not in f.filename and not os.path.abspath(f.filename).startswith(ours)]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {f.filename}:{f.lineno}"


def _import_module(name: str, module: str, class_path: str, file: Optional[str], code: _Code,
                   saved: Dict[str, Any]) -> Any:
    """The module holding an action's class: by file for a __main__ script, else a regular import."""
    if file is not None:
        if not os.path.isfile(file):
            raise ActionLoadError(name, class_path, f"cannot import module {module!r}: its script {file} does not exist"
                                  + (" in the run's commit" if code.mode == "run" else ""))
        existing = sys.modules.get(module)
        if existing is not None and _same_file(getattr(existing, "__file__", None), file):
            return existing
        modname = module if existing is None else f"_exprag_action_{module}_{abs(hash(file)) % 10**8}"
        spec = importlib.util.spec_from_file_location(modname, file)
        if spec is None or spec.loader is None:
            raise ActionLoadError(name, class_path, f"cannot import module {module!r} from {file}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[modname] = mod
        try:
            with _no_new_runs(module):
                spec.loader.exec_module(mod)
        except BaseException as exc:
            sys.modules.pop(modname, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise ActionLoadError(name, class_path, f"importing module {module!r} ({file}) raised "
                                  f"{type(exc).__name__}: {exc}{_where(exc)}") from None
        return mod
    if code.mode == "run" and code.worktree:
        top_pkg = module.split(".")[0]
        current = sys.modules.get(top_pkg)
        cur_file = getattr(current, "__file__", None) if current is not None else None
        if current is not None and (cur_file is None or not _under(cur_file, code.worktree)):
            for k in list(sys.modules):
                if k == top_pkg or k.startswith(top_pkg + "."):
                    saved.setdefault(k, sys.modules.pop(k))
    try:
        with _no_new_runs(module):
            return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name) and (module == exc.name or module[len(exc.name)] == "."):
            where = ", ".join(code.search_path()) or "no recorded folder"
            raise ActionLoadError(name, class_path, f"cannot import module {module!r}: no module named "
                                  f"{exc.name!r} (searched {where} and sys.path)") from None
        raise ActionLoadError(name, class_path, f"importing module {module!r} raised ModuleNotFoundError: "
                              f"{exc}{_where(exc)}") from None
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ActionLoadError(name, class_path, f"importing module {module!r} raised {type(exc).__name__}: "
                              f"{exc}{_where(exc)}") from None


# --- rebuilding parameters -------------------------------------------------------------------------


def _revive(value: Any, hint: Any) -> Any:
    """A recorded (JSON) parameter turned back into what the field's type says, best effort."""
    if hint is None or hint is Any or isinstance(hint, (str, typing.ForwardRef)):
        return records.from_json(value)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or (origin is not None and getattr(origin, "__name__", "") == "UnionType"):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _revive(value, inner[0]) if len(inner) == 1 else records.from_json(value)
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) == len(value):
            return tuple(_revive(v, a) for v, a in zip(value, args))
        item = args[0] if args else Any
        return origin(_revive(v, item) for v in value)
    if origin is dict and isinstance(value, dict):
        vh = args[1] if len(args) == 2 else Any
        return {k: _revive(v, vh) for k, v in value.items()}
    if not isinstance(hint, type):
        return records.from_json(value)
    if issubclass(hint, str):
        return value
    if issubclass(hint, bool):
        return value
    if issubclass(hint, float) and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        v = records.from_json(value)
        return float(v) if isinstance(v, (int, float)) else v
    if issubclass(hint, enum.Enum):
        try:
            return hint(records.from_json(value))
        except ValueError:
            return value
    if issubclass(hint, pathlib.PurePath) and isinstance(value, str):
        return hint(value)
    if issubclass(hint, _dt.datetime) and isinstance(value, str):
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if issubclass(hint, _dt.date) and isinstance(value, str):
        return _dt.date.fromisoformat(value)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return hint(**_revive_fields(hint, value))
    if issubclass(hint, (tuple, set, frozenset)) and isinstance(value, list):
        return hint(records.from_json(value))
    return records.from_json(value)


def _revive_fields(cls: type, params: Mapping[str, Any]) -> Dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    out = {}
    for k, v in params.items():
        try:
            out[k] = _revive(v, hints.get(k))
        except Exception:
            out[k] = records.from_json(v)
    return out


# --- loading ---------------------------------------------------------------------------------------


def _load(run: "Run", name: str, record: Dict[str, Any], code: _Code, saved: Dict[str, Any]) -> Action:
    class_path = record.get("class")
    if not isinstance(class_path, str) or class_path.count(":") != 1:
        raise ActionLoadError(name, str(class_path), "the record's class is not 'module:QualName'")
    module, qual = class_path.split(":")
    if not module or not qual:
        raise ActionLoadError(name, class_path, "the record's class is not 'module:QualName'")
    file = record.get("file") if isinstance(record.get("file"), str) else None
    mapped = code.map(file)
    if file is not None and mapped is None:  # a run file is data: it never gets code imported from elsewhere
        if code.mode == "run":
            raise ActionLoadError(name, class_path, f"its script {file} is outside the run's repository "
                                  f"{code.top or '(unknown)'}, so the run's commit does not hold it; use --code current")
        raise ActionLoadError(name, class_path, f"its script {file} is outside the current project {code.here} "
                              "(current code is imported only from there); it is not imported")
    with _sys_path(code.search_path()):
        mod = _import_module(name, module, class_path, mapped, code, saved)
    try:
        cls = _resolve_qualname(mod, qual)
    except AttributeError:
        where = getattr(mod, "__file__", None)
        raise ActionLoadError(name, class_path, f"module {module!r}{f' ({where})' if where else ''} has no class "
                              f"{qual!r} (renamed or removed since the run?)") from None
    if not (isinstance(cls, type) and issubclass(cls, Action)):
        raise ActionLoadError(name, class_path, f"{module}.{qual} is not an exprag_plus.Action subclass")
    params = record.get("params")
    params = params if isinstance(params, dict) else {}
    kwargs = _revive_fields(cls, params)
    try:
        return cls(**kwargs)
    except Exception as exc:
        raise ActionLoadError(name, class_path, f"the class no longer accepts the recorded params "
                              f"{sorted(params)} ({type(exc).__name__}: {exc})") from None


def load_action(run: "Run", name: str) -> Action:
    """The action `name` of `run`, rebuilt from its record with the current code (ActionLoadError if not)."""
    table = action_records(run.records)
    if name not in table:
        raise _not_found(run, name, list(table))
    ctx = _Code(run, "current", keep=False)
    with _sys_path(ctx.search_path()):
        return _load(run, name, table[name]["record"], ctx, {})


# --- which keys an action can ask ------------------------------------------------------------------


def _literal_key(call: ast.Call) -> Optional[str]:
    key = call.args[0] if call.args else next((kw.value for kw in call.keywords if kw.arg == "key"), None)
    return key.value if isinstance(key, ast.Constant) and isinstance(key.value, str) else None


def question_keys(cls: type) -> Tuple[Set[str], bool]:
    """(literal keys of `.choice/.checkbox/.text` calls in the class's source, whether that is all of them).

    Follows the interaction from `execute` into the class's own methods (`self.helper(interaction)`).
    Not all when a key is computed, when the interaction is used any other way (stored, handed to a
    function), or when the source is unavailable: then no prefilled key can be refused before running."""
    keys: Set[str] = set()
    methods: Dict[str, Any] = {}
    complete = True
    for k in cls.__mro__:
        if k in (Action, object) or k.__module__ == "builtins":
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(k)))
        except (OSError, TypeError, SyntaxError):
            complete = False
            continue
        classdef = next((n for n in tree.body if isinstance(n, ast.ClassDef)), None)
        if classdef is None:
            complete = False
            continue
        for node in ast.walk(classdef):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _KINDS:
                key = _literal_key(node)
                if key is not None:
                    keys.add(key)  # whatever the receiver: a known key only widens what is accepted
        for node in classdef.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in methods:
                methods[node.name] = node
    execute = methods.get("execute")
    if execute is None or len(execute.args.posonlyargs + execute.args.args) < 2:
        return keys, False
    params = lambda fn: [x.arg for x in fn.args.posonlyargs + fn.args.args]
    tainted: Dict[str, Set[str]] = {"execute": {params(execute)[1]}}
    todo = ["execute"]
    while todo:
        fn = methods[todo.pop()]
        names = tainted[fn.name]
        selfname = params(fn)[0] if params(fn) else None
        allowed: Set[int] = set()
        for node in ast.walk(fn):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in _KINDS and isinstance(f.value, ast.Name) and f.value.id in names:
                allowed.add(id(f.value))
                if _literal_key(node) is None:
                    complete = False
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == selfname:
                target = methods.get(f.attr)
                if target is not None and target.decorator_list:
                    target = None  # a staticmethod, property...: do not guess how arguments map
                for i, arg in enumerate(node.args):
                    if isinstance(arg, ast.Name) and arg.id in names:
                        allowed.add(id(arg))
                        tparams = params(target) if target is not None else []
                        if target is None or i + 1 >= len(tparams):
                            complete = False
                            continue
                        if tparams[i + 1] not in tainted.setdefault(target.name, set()):
                            tainted[target.name].add(tparams[i + 1])
                            todo.append(target.name)
                for kw in node.keywords:
                    if isinstance(kw.value, ast.Name) and kw.value.id in names:
                        allowed.add(id(kw.value))
                        if target is None or kw.arg is None:
                            complete = False
                        elif kw.arg not in tainted.setdefault(target.name, set()):
                            tainted[target.name].add(kw.arg)
                            todo.append(target.name)
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and node.id in names and id(node) not in allowed:
                complete = False
    return keys, complete


def _check_prefilled(name: str, action: Action, interaction: Interaction,
                     executions: Sequence[Dict[str, Any]]) -> Tuple[Set[str], bool]:
    """Refuse, before running, a prefilled key the action can never ask; returns (known keys, complete)."""
    keys, complete = question_keys(type(action))
    known = set(keys)
    for r in executions:
        if isinstance(r.get("answers"), dict):
            known.update(r["answers"])
    prefilled = list(interaction.__dict__.get("prefilled", {}))
    if not complete:
        return known, complete
    unknown = [k for k in prefilled if k not in known]
    if unknown:
        k = unknown[0]
        near = difflib.get_close_matches(k, sorted(known), n=1, cutoff=0.6)
        flag = "--set" if interaction.__dict__.get("source") == "--set" else "the answer"
        more = f" (also {', '.join(repr(u) for u in unknown[1:])})" if len(unknown) > 1 else ""
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        asks = ", ".join(sorted(keys)) if keys else "nothing"
        raise AnswerError(f"action {name!r} never asks for {flag} {k!r}{hint}{more}; its questions: {asks}; nothing was run")
    return known, complete


# --- running ---------------------------------------------------------------------------------------


def run_action(run: "Run", name: str, interaction: Optional[Interaction] = None, *, code: str = "current",
               keep: bool = False) -> Dict[str, Any]:
    """Execute the action `name` of `run` and append an `action_run` record; returns that record.

    `interaction` defaults to a PrefilledInteraction with no answers (defaults only). `code="run"`
    imports the class from the run's own commit (a temporary git worktree, kept with `keep`).
    Raises: ActionNotFound, ActionLoadError, AnswerError (bad/missing/unknown answers; `record` set when
    the action had started), ActionFailed (the action raised; `record` holds the error), GitError.
    """
    table = action_records(run.records)
    if name not in table:
        raise _not_found(run, name, list(table))
    if interaction is None:
        interaction = PrefilledInteraction()
    if not isinstance(interaction, Interaction):
        raise TypeError(f"interaction must be an exprag_plus.Interaction, not {type(interaction).__name__}")
    ctx = _Code(run, code, keep)
    saved: Dict[str, Any] = {}
    before = set(sys.modules)
    ctx.open()
    try:
        with _sys_path(ctx.search_path()):
            action = _load(run, name, table[name]["record"], ctx, saved)
            known, complete = _check_prefilled(name, action, interaction, table[name]["executions"])
            interaction.reset(name)
            status, error, result, raised = "ok", None, None, None
            t0 = time.perf_counter()
            try:
                result = action.execute(interaction)
            except BaseException as exc:  # recorded, then re-raised as what it is
                raised = exc
            duration = round((time.perf_counter() - t0) * 1000.0, 3)
            answer_error = interaction.__dict__.get("error")
            if answer_error is not None:
                status, error = "error", {"type": "AnswerError", "message": str(answer_error)}
            elif raised is not None:
                status = "error"
                tail = "".join(traceback.format_exception(type(raised), raised, raised.__traceback__))[-_TRACEBACK_TAIL:]
                error = {"type": type(raised).__qualname__, "message": str(raised), "traceback": tail}
            answers = records.to_json(interaction.__dict__.get("answers", {}))
            secrets = redact.secret_values(answers)
            fields = {"name": name, "answers": answers, "status": status, "error": error, "duration_ms": duration,
                      "result": records.to_json(result) if status == "ok" else None}
            fields = {**redact.redact_mapping(fields, secrets), "code": {"mode": code, "commit": ctx.commit}}
            record = appender.append_record(run.path, "action_run", fields)
            if run._records is not None:
                run._records.append(record)
    finally:
        _forget_modules(before, ctx.search_path() + ([ctx.worktree] if ctx.worktree else []))
        for k, mod in saved.items():
            sys.modules[k] = mod
        ctx.close()
    if answer_error is not None:
        answer_error.record = record
        raise answer_error
    if isinstance(raised, KeyboardInterrupt):
        raise raised
    if raised is not None:
        failed = ActionFailed(f"action {name!r} failed: {type(raised).__qualname__}: {raised}", record)
        raise failed from raised
    stray = [k for k in interaction.unused() if k not in known]
    if stray:
        flag = "--set" if interaction.__dict__.get("source") == "--set" else "the answers"
        asked = ", ".join(interaction.answers) or "nothing"
        exc2 = AnswerError(f"action {name!r} ran (status ok, recorded) but never asked for {flag} "
                           f"{', '.join(repr(k) for k in stray)}; it asked: {asked}")
        exc2.record = record
        raise exc2
    return record


def parse_set(items: Sequence[str]) -> Dict[str, str]:
    """`--set KEY=VALUE` options as a dict; a malformed or repeated one is a ValueError."""
    out: Dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--set {item!r} has no '=': write --set KEY=VALUE")
        key = key.strip()
        if not key:
            raise ValueError(f"--set {item!r} has no key before '=': write --set KEY=VALUE")
        if key in out:
            raise ValueError(f"--set {key} is given twice ({out[key]!r} and {value!r})")
        out[key] = value
    return out
