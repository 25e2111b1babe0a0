"""Post-run actions, driven for real: the CLI in-process and in subprocesses, a pseudo-terminal, real
files and a real git repository. Every error is checked as the exact line a user sees."""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import math
import os
import pty
import select
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from exprag_plus import Action, Experiment, Interaction, load_run
from exprag_plus.actions import (ActionFailed, ActionLoadError, ActionNotFound, Actions, AnswerError, PrefilledInteraction,
                                 Question, question_keys, run_action)

from conftest import ROOT, git, read_lines, run_python

ACTIONS_SOURCE = '''
from exprag_plus import Action


class ExportToHub(Action):
    """Export the model to the Hub or to a folder."""

    model: str
    default_name: str = "my-model"

    def execute(self, interaction):
        target = interaction.choice("target", "Export to:", ["HF Hub", "Local folder"])
        if target == "HF Hub":
            name = interaction.text("name", "Hub model name:", default=self.default_name)
            private = interaction.checkbox("private", "Private repo?", default=False)
            return {"pushed": name, "private": private, "model": self.model}
        folder = interaction.text("folder", "Output folder:")
        return {"saved": folder, "model": self.model}


class Boom(Action):
    def describe(self):
        return "always fails"

    def execute(self, interaction):
        raise RuntimeError("disk full")


class Dynamic(Action):
    keys: tuple = ("alpha",)

    def execute(self, interaction):
        return {k: interaction.text(k, k + "?", default="x") for k in self.keys}
'''


@pytest.fixture(autouse=True)
def _no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process CLI calls never see a terminal, even under `pytest -s`."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


@pytest.fixture
def acts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A uniquely named module of actions in a work folder that is the current directory."""
    work = tmp_path / "work"
    work.mkdir()
    name = f"acts_{uuid.uuid4().hex[:8]}"
    (work / f"{name}.py").write_text(ACTIONS_SOURCE)
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    module = __import__(name)
    yield module
    sys.modules.pop(name, None)


@pytest.fixture
def xp(acts, runs_dir: Path) -> str:
    """A finished run with three actions registered; returns its id."""
    with Experiment("train", root=str(runs_dir)) as exp:
        exp.track({"step": 0, "acc": 0.5})
        assert exp.add_action(acts.ExportToHub(model="ckpt.pt")) == "ExportToHub"
        exp.add_action(acts.Boom())
        exp.add_action(acts.Dynamic())
    return exp.run_id


def j(out: str):
    return json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON literal {c}"))


def short(run_id: str) -> str:
    return run_id.replace("-", "")[-8:]


def env_for(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def cli_noinput(*args: str, cwd: Path, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """The real command, stdin not a terminal; a prompt would hang, so a timeout guards it."""
    return subprocess.run([sys.executable, "-m", "exprag_plus", *args], cwd=cwd, env=env_for(env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


def action_runs(runs_dir: Path, run_id: str) -> List[dict]:
    return [r for r in read_lines(runs_dir / f"{run_id}.jsonl") if r["type"] == "action_run"]


# --- Action classes --------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


class WithTypes(Action):
    """Parameters of several kinds.

    More text that describe() leaves out."""

    folder: Path
    tags: tuple = ("a", "b")
    color: Color = Color.RED
    lr: float = 0.1
    extra: list = dataclasses.field(default_factory=list)

    def execute(self, interaction):
        return None


@dataclasses.dataclass
class Decorated(Action):
    items: list = dataclasses.field(default_factory=lambda: [1, 2])
    n: int = 3

    def execute(self, interaction):
        return self.items


class Frozen(Action, frozen=True):
    n: int = 1


def test_subclasses_are_dataclasses_with_or_without_decorator() -> None:
    a = WithTypes(folder=Path("/x"))
    assert dataclasses.is_dataclass(WithTypes) and a.tags == ("a", "b") and a.extra == [] and a.extra is not WithTypes(Path("y")).extra
    assert a == WithTypes(folder=Path("/x")) and "folder=PosixPath('/x')" in repr(a)
    assert a.describe() == "Parameters of several kinds."
    d = Decorated()
    assert d.items == [1, 2] and d.n == 3 and Decorated(items=[5]).items == [5] and d.describe() == "Decorated"
    with pytest.raises(dataclasses.FrozenInstanceError):
        Frozen().n = 2  # type: ignore[misc]
    with pytest.raises(TypeError, match=r"^BadFrozen: Action subclasses are dataclasses already; for a frozen one write "
                                        r"`class BadFrozen\(Action, frozen=True\)` instead of @dataclass\(frozen=True\)$"):
        @dataclasses.dataclass(frozen=True)
        class BadFrozen(Action):
            n: int = 1

        BadFrozen()
    with pytest.raises(NotImplementedError):
        Action.__new__(Frozen).execute(PrefilledInteraction())


def test_add_action_record_and_refusals(runs_dir: Path, acts) -> None:
    with Experiment("t", root=str(runs_dir)) as exp:
        exp.add_action(WithTypes(folder=Path("/data/out"), lr=math.nan), name="typed")
        with pytest.raises(ValueError) as e:
            exp.add_action(WithTypes(folder=Path("/y")), name="typed")
        assert str(e.value) == "this run already has an action named 'typed': give the second one another name (add_action(action, name=...))"
        with pytest.raises(TypeError) as e2:
            exp.add_action("ExportToHub")
        assert str(e2.value) == "add_action() takes an exprag_plus.Action instance, not a str"
        with pytest.raises(TypeError) as e2:
            exp.add_action(acts.Boom)
        assert str(e2.value) == "add_action() takes an exprag_plus.Action instance, not a class (instantiate it: add_action(MyAction(...)))"

        class Local(Action):
            def execute(self, interaction):
                return 1

        with pytest.raises(ValueError, match=r"^action class test_add_action_record_and_refusals\.<locals>\.Local is defined "
                                             r"inside a function: define it at module level"):
            exp.add_action(Local())
        with pytest.raises(ValueError) as e:
            exp.add_action(WithTypes(folder=Path("/y"), extra=[object()]), name="odd")
        assert str(e.value) == ("action 'odd': parameter 'extra.0' (list) cannot be stored as JSON; give the action what it "
                                "needs to find it later (a path, a run id, a name)")
        with pytest.raises(ValueError, match="action name must be a non-empty string"):
            exp.add_action(acts.Boom(), name=" ")
    exp.add_action(acts.Boom(), name="after-close")  # appended after run_end, like action_run records
    recs = read_lines(runs_dir / f"{exp.run_id}.jsonl")
    typed = [r for r in recs if r["type"] == "action"]
    assert [r["name"] for r in typed] == ["typed", "after-close"]
    rec = typed[0]
    assert rec["class"] == f"{__name__}:WithTypes" and "file" not in rec
    assert rec["params"] == {"folder": "/data/out", "tags": ["a", "b"], "color": "red", "lr": "NaN", "extra": []}
    assert rec["description"] == "Parameters of several kinds."
    assert recs[-1]["type"] == "action" and recs[-1]["seq"] == recs[-2]["seq"] + 1 and recs[-2]["type"] == "run_end"
    # loading rebuilds the declared types
    action = Actions(load_run(exp.run_id, root=str(runs_dir)))["typed"]
    assert action.folder == Path("/data/out") and action.tags == ("a", "b") and action.color is Color.RED
    assert math.isnan(action.lr) and action.extra == []


# --- the Interaction protocol ----------------------------------------------------------------------


def test_prefilled_answers_parse_and_record_defaults() -> None:
    ia = PrefilledInteraction({"p": "YES", "q": "n", "r": "1", "s": "False", "c": "hf hub", "t": ""})
    ia.reset("A")
    assert [ia.checkbox(k, k) for k in "pqrs"] == [True, False, True, False]
    assert ia.choice("c", "Export to:", ["HF Hub", "Local folder"]) == "HF Hub"
    assert ia.text("t", "Name:") == "" and ia.text("u", "Other:", default="dflt") == "dflt"
    assert ia.checkbox("v", "Sure?", default=False) is False
    assert ia.answers == {"p": True, "q": False, "r": True, "s": False, "c": "HF Hub", "t": "", "u": "dflt", "v": False}
    with pytest.raises(AnswerError) as e:
        ia.text("w", 'Say "hi":')
    assert str(e.value) == """action 'A' needs an answer for 'w' ("Say \\"hi\\":"): any text; give answers={'w': ...}"""
    with pytest.raises(ValueError, match="^choice 'x' has no choices$"):
        ia.choice("x", "X", [])
    with pytest.raises(ValueError, match="^choice 'x': default 'z' is not one of the choices$"):
        ia.choice("x", "X", ["a"], default="z")


def test_custom_backends_record_what_they_answer() -> None:
    class Form(Interaction):  # the recommended way: override ask()
        def ask(self, question):
            return question.parse({"choice": "2", "checkbox": "y", "text": "typed"}[question.kind], numbered=True)

    class Wholesale(Interaction):  # the seed's way: override the methods themselves
        def choice(self, key, label, choices, *, default=None):
            return choices[-1]

        def checkbox(self, key, label, *, default=None):
            return True

        def text(self, key, label, *, default=None):
            return "web"

    for backend, expected in ((Form({"folder": "pre"}), {"target": "Local folder", "private": True, "folder": "pre"}),
                              (Wholesale(), {"target": "Local folder", "private": True, "folder": "web"})):
        backend.reset("x")
        backend.choice("target", "Export to:", ["HF Hub", "Local folder"])
        backend.checkbox("private", "Private?")
        backend.text("folder", "Folder:")
        assert backend.answers == expected
    assert Question.make("choice", "k", "K", ["a", "b"]).accepts() == "one of 'a', 'b'"


class Keys(Action):
    def execute(self, interaction):
        if interaction.checkbox("go", "Go?", default=True):
            self.more(interaction)

    def more(self, ui):
        ui.text("where", "Where?", default=".")


class Stores(Action):
    def execute(self, interaction):
        self.ui = interaction
        return self.ui.text("late", "Late?")


class Computed(Action):
    def execute(self, interaction):
        return [interaction.text(f"k{i}", "?", default="") for i in range(2)]


def test_question_keys_static_scan() -> None:
    assert question_keys(Keys) == ({"go", "where"}, True)
    assert question_keys(Stores) == ({"late"}, False)
    assert question_keys(Computed) == (set(), False)


# --- the CLI: answers ------------------------------------------------------------------------------


def test_run_with_set_json_and_record(main, runs_dir: Path, xp: str) -> None:
    before = read_lines(runs_dir / f"{xp}.jsonl")
    rc, out, err = main("actions", "run", short(xp), "ExportToHub", "--root", str(runs_dir),
                        "--set", "target=HF Hub", "--set", "private=Yes", "--json")
    assert rc == 0 and err == ""
    assert j(out) == {"run_id": xp, "name": "ExportToHub", "status": "ok",
                      "answers": {"target": "HF Hub", "name": "my-model", "private": True},
                      "result": {"pushed": "my-model", "private": True, "model": "ckpt.pt"}, "error": None}
    (rec,) = action_runs(runs_dir, xp)
    assert set(rec) == {"type", "run_id", "seq", "time", "elapsed_ms", "pid", "name", "answers", "status", "error",
                        "duration_ms", "result", "code"}
    assert rec["run_id"] == xp and rec["seq"] == before[-1]["seq"] + 1 and rec["pid"] == os.getpid()
    assert rec["elapsed_ms"] >= before[-1]["elapsed_ms"] and rec["time"].endswith("Z")
    assert rec["name"] == "ExportToHub" and rec["status"] == "ok" and rec["error"] is None
    assert rec["code"] == {"mode": "current", "commit": None}
    assert rec["answers"] == {"target": "HF Hub", "name": "my-model", "private": True}  # the default is recorded
    assert rec["result"] == {"pushed": "my-model", "private": True, "model": "ckpt.pt"}
    assert isinstance(rec["duration_ms"], float) and 0 <= rec["duration_ms"] < 5000
    rc, out, err = main("actions", "run", "latest", "ExportToHub", "--root", str(runs_dir),
                        "--set", "target=Local folder", "--set", "folder=out", "--set", "private=true")
    assert rc == 0 and json.loads(out) == {"saved": "out", "model": "ckpt.pt"}, err
    assert err == (f"exprag-plus: --set private not asked this time (the action asks it only in some cases)\n"
                   f"exprag-plus: action 'ExportToHub' ok in {action_runs(runs_dir, xp)[-1]['duration_ms']} ms; "
                   f"recorded in run {short(xp)} (answers: target=Local folder, folder=out)\n")


@pytest.mark.parametrize("args, message", [
    ([], """action 'ExportToHub' needs an answer for 'target' ("Export to:"): one of 'HF Hub', 'Local folder'; """
         "pass --set target=... (stdin is not a terminal)"),
    (["--no-input", "--set", "target=Local folder"],
     """action 'ExportToHub' needs an answer for 'folder' ("Output folder:"): any text; pass --set folder=... (--no-input)"""),
    (["--set", "target=HF"], """action 'ExportToHub': --set target='HF' is not a valid choice for "Export to:"; """
                             "use one of 'HF Hub', 'Local folder'"),
    (["--set", "target=HF Hub", "--set", "private=maybe"],
     """action 'ExportToHub': --set private='maybe' is not a boolean for "Private repo?"; use true/false, yes/no, y/n or 1/0"""),
])
def test_answer_errors_exit_2_and_are_recorded(main, runs_dir: Path, xp: str, args: List[str], message: str) -> None:
    rc, out, err = main("actions", "run", xp, "ExportToHub", "--root", str(runs_dir), *args)
    assert (rc, out, err) == (2, "", f"exprag-plus actions: error: {message}\n")
    (rec,) = action_runs(runs_dir, xp)
    assert rec["status"] == "error" and rec["error"] == {"type": "AnswerError", "message": message}
    assert rec["result"] is None


@pytest.mark.parametrize("args, message", [
    (["--set", "target"], "--set 'target' has no '=': write --set KEY=VALUE"),
    (["--set", "=x"], "--set '=x' has no key before '=': write --set KEY=VALUE"),
    (["--set", "folder=a", "--set", "folder=b"], "--set folder is given twice ('a' and 'b')"),
    (["--set", "targte=HF Hub"], "action 'ExportToHub' never asks for --set 'targte' (did you mean 'target'?); "
                                 "its questions: folder, name, private, target; nothing was run"),
    (["--keep"], "--keep keeps the worktree of --code run; it means nothing with --code current"),
])
def test_bad_set_is_refused_before_anything_runs(main, runs_dir: Path, xp: str, args: List[str], message: str) -> None:
    rc, out, err = main("actions", "run", xp, "ExportToHub", "--root", str(runs_dir), *args)
    assert (rc, out, err) == (2, "", f"exprag-plus actions: error: {message}\n")
    assert action_runs(runs_dir, xp) == []


def test_unknown_key_with_computed_questions_is_an_error_after_the_run(main, runs_dir: Path, xp: str) -> None:
    rc, out, err = main("actions", "run", xp, "Dynamic", "--root", str(runs_dir), "--set", "beta=1", "--json")
    assert rc == 2 and j(out)["status"] == "ok" and j(out)["answers"] == {"alpha": "x"}
    assert err == ("exprag-plus actions: error: action 'Dynamic' ran (status ok, recorded) but never asked for "
                   "--set 'beta'; it asked: alpha\n")
    assert [r["status"] for r in action_runs(runs_dir, xp)] == ["ok"]


def test_secret_answers_are_redacted_in_the_record_and_the_output(main, acts, runs_dir: Path) -> None:
    with Experiment("train", root=str(runs_dir)) as exp:
        exp.add_action(acts.Dynamic(keys=("api_token", "alpha")))
    secret = "tok-9f8e7d6c5b4a39281706"
    rc, out, err = main("actions", "run", exp.run_id, "Dynamic", "--root", str(runs_dir), "--json",
                        "--set", f"api_token={secret}", "--set", f"alpha=see {secret}")
    assert rc == 0, err
    (rec,) = action_runs(runs_dir, exp.run_id)
    assert rec["answers"] == {"api_token": "***", "alpha": "see ***"}
    assert rec["result"] == {"api_token": "***", "alpha": "see ***"}
    assert secret not in (runs_dir / f"{exp.run_id}.jsonl").read_text() and secret not in out + err


def test_action_that_raises_exits_1_with_error_recorded(main, runs_dir: Path, xp: str) -> None:
    rc, out, err = main("actions", "run", xp, "Boom", "--root", str(runs_dir), "--json")
    assert rc == 1
    assert err == (f"exprag-plus: action 'Boom' failed: RuntimeError: disk full (recorded in run {short(xp)}; "
                   f"see `exprag-plus actions show {short(xp)} Boom`)\n")
    data = j(out)
    assert data["status"] == "error" and data["result"] is None and data["answers"] == {}
    assert data["error"]["type"] == "RuntimeError" and data["error"]["message"] == "disk full"
    (rec,) = action_runs(runs_dir, xp)
    assert rec["status"] == "error" and rec["error"]["type"] == "RuntimeError" and rec["error"]["message"] == "disk full"
    assert 'raise RuntimeError("disk full")' in rec["error"]["traceback"]
    rc, out, err = main("actions", "show", xp, "Boom", "--root", str(runs_dir))
    assert rc == 0 and "error   " in out and "RuntimeError: disk full" in out and "last error:" in out


def test_unknown_action_name(main, runs_dir: Path, xp: str) -> None:
    rc, out, err = main("actions", "run", xp, "exporttohub", "--root", str(runs_dir))
    assert (rc, err) == (2, f"exprag-plus actions: error: run {short(xp)} has no action 'exporttohub'; did you mean "
                            f"'ExportToHub'? (actions: ExportToHub, Boom, Dynamic)\n")
    rc, out, err = main("actions", "show", xp, "Exp", "--root", str(runs_dir))
    assert (rc, err) == (2, f"exprag-plus actions: error: run {short(xp)} has no action 'Exp'; did you mean "
                            f"'ExportToHub'? (actions: ExportToHub, Boom, Dynamic)\n")


def test_list_and_show(main, runs_dir: Path, xp: str) -> None:
    with Experiment("no actions", root=str(runs_dir)):
        pass
    main("actions", "run", xp, "ExportToHub", "--root", str(runs_dir), "--set", "target=HF Hub")
    main("actions", "run", xp, "Boom", "--root", str(runs_dir))
    rc, out, err = main("actions", "list", "--root", str(runs_dir), "--json")
    data = j(out)
    assert rc == 0 and data["runs"] == 2
    assert [(a["name"], a["times_run"], a["last_status"]) for a in data["actions"]] == [
        ("ExportToHub", 1, "ok"), ("Boom", 1, "error"), ("Dynamic", 0, None)]
    first = data["actions"][0]
    assert set(first) == {"run_id", "short_id", "run_name", "name", "class", "description", "params", "registered",
                          "times_run", "last_status", "last_time"}
    assert first["run_id"] == xp and first["run_name"] == "train" and first["params"] == {"model": "ckpt.pt", "default_name": "my-model"}
    assert first["description"] == "Export the model to the Hub or to a folder." and first["class"].endswith(":ExportToHub")
    rc, out, err = main("actions", "list", "latest", "--root", str(runs_dir))
    assert (rc, out) == (0, f"no actions registered in run {short(main_latest(runs_dir))} (register them with exp.add_action(...))\n")
    rc, out, err = main("actions", "list", "--root", str(runs_dir))
    lines = out.splitlines()
    assert lines[0].split() == ["RUN", "RUN", "NAME", "ACTION", "DESCRIPTION", "RUNS", "LAST"]
    assert lines[2].split()[:3] == [short(xp), "train", "Boom"] and lines[2].split()[-2:] == ["1", "error"]
    rc, out, err = main("actions", "show", xp, "ExportToHub", "--root", str(runs_dir), "--json")
    data = j(out)
    assert set(data) == {"run_id", "short_id", "run_name", "name", "class", "file", "description", "params", "registered",
                         "executions"}
    (ex,) = data["executions"]
    assert ex["status"] == "ok" and ex["answers"] == {"target": "HF Hub", "name": "my-model", "private": False}
    rc, out, err = main("actions", "show", xp, "ExportToHub", "--root", str(runs_dir))
    assert "params      model = ckpt.pt\n            default_name = my-model" in out
    assert f"run it: exprag-plus actions run {short(xp)} ExportToHub --set KEY=VALUE ..." in out


def main_latest(runs_dir: Path) -> str:
    return sorted(p.stem for p in runs_dir.glob("*.jsonl"))[-1]


# --- Python API ------------------------------------------------------------------------------------


def test_python_api_lazy_mapping_and_run_action(runs_dir: Path, xp: str, acts) -> None:
    run = load_run(xp, root=str(runs_dir))
    assert list(Actions(run)) == ["ExportToHub", "Boom", "Dynamic"] and len(Actions(run)) == 3
    assert Actions(run).record("Boom")["description"] == "always fails"
    record = run_action(run, "ExportToHub", PrefilledInteraction({"target": "Local folder", "folder": "/o"}))
    assert record["result"] == {"saved": "/o", "model": "ckpt.pt"} and Actions(run).executions("ExportToHub") == [record]
    with pytest.raises(ActionFailed) as e:
        run_action(run, "Boom")
    assert isinstance(e.value.__cause__, RuntimeError) and e.value.record["status"] == "error"
    with pytest.raises(ActionNotFound) as e2:
        Actions(run)["nope"]
    assert str(e2.value) == f"run {short(xp)} has no action 'nope' (actions: ExportToHub, Boom, Dynamic)"
    # a module that is gone: names still list, getting the action says why it cannot load
    Path(acts.__file__).unlink()
    sys.modules.pop(acts.__name__)
    run = load_run(xp, root=str(runs_dir))
    assert list(Actions(run)) == ["ExportToHub", "Boom", "Dynamic"]
    with pytest.raises(ActionLoadError) as e3:
        Actions(run)["Boom"]
    assert e3.value.name == acts.__name__ and "cannot import module" in str(e3.value)


# --- loading in a fresh process --------------------------------------------------------------------


def test_import_failures_name_module_and_reason_and_spare_the_others(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "acts_a.py").write_text(ACTIONS_SOURCE)
    (work / "acts_b.py").write_text(ACTIONS_SOURCE)
    run_python("""
        import acts_a, acts_b
        from exprag_plus import Experiment
        with Experiment("x", root="runs") as exp:
            exp.add_action(acts_a.ExportToHub(model="m"), name="gone")
            exp.add_action(acts_b.ExportToHub(model="m"), name="renamed")
            exp.add_action(acts_b.Dynamic(), name="fine")
    """, cwd=work, env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    (work / "acts_a.py").unlink()
    (work / "acts_b.py").write_text(ACTIONS_SOURCE.replace("class ExportToHub", "class ExportToHubV2"))
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    p = cli_noinput("actions", "run", "latest", "gone", "--root", "runs", cwd=work, env=env)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == (f"exprag-plus actions: error: cannot load action 'gone' (acts_a:ExportToHub): cannot import "
                        f"module 'acts_a': no module named 'acts_a' (searched {work} and sys.path)\n")
    p = cli_noinput("actions", "run", "latest", "renamed", "--root", "runs", cwd=work, env=env)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == (f"exprag-plus actions: error: cannot load action 'renamed' (acts_b:ExportToHub): module "
                        f"'acts_b' ({work / 'acts_b.py'}) has no class 'ExportToHub' (renamed or removed since the run?)\n")
    p = cli_noinput("actions", "list", "latest", "--root", "runs", "--json", cwd=work, env=env)
    assert [a["name"] for a in j(p.stdout)["actions"]] == ["gone", "renamed", "fine"]
    p = cli_noinput("actions", "run", "latest", "fine", "--root", "runs", "--json", cwd=work, env=env)
    assert p.returncode == 0 and j(p.stdout)["result"] == {"alpha": "x"}


SCRIPT = '''
from exprag_plus import Action, Experiment


class Greet(Action):
    who: str

    def execute(self, interaction):
        return "hello " + interaction.text("greeting", "Greeting:", default="hi") + " " + self.who


{body}
'''


def test_classes_of_a_guarded_script_load_without_rerunning_it(tmp_path: Path) -> None:
    work = tmp_path / "proj"
    (work / "scripts").mkdir(parents=True)
    run_body = 'with Experiment("script run", root="runs") as exp:\n    exp.add_action(Greet(who="you"))\n'
    (work / "scripts" / "my-script.py").write_text(SCRIPT.format(body='if __name__ == "__main__":\n' + textwrap.indent(run_body, "    ")))
    (work / "scripts" / "unguarded.py").write_text(SCRIPT.format(body=run_body))
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    for script in ("my-script.py", "unguarded.py"):
        subprocess.run([sys.executable, f"scripts/{script}"], cwd=work, env=env_for(env), check=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    guarded, unguarded = sorted((work / "runs").glob("*.jsonl"))
    (rec,) = [r for r in read_lines(guarded) if r["type"] == "action"]
    assert rec["class"] == "my_script:Greet" and rec["file"] == str(work / "scripts" / "my-script.py")
    p = cli_noinput("actions", "run", guarded.stem, "Greet", "--root", "runs", "--set", "greeting=hey", cwd=work, env=env)
    assert (p.returncode, p.stdout) == (0, "hello hey you\n")
    p = cli_noinput("actions", "run", unguarded.stem, "Greet", "--root", "runs", cwd=work, env=env)
    assert p.returncode == 2
    assert p.stderr.startswith(f"exprag-plus actions: error: cannot load action 'Greet' (unguarded:Greet): importing "
                               f"module 'unguarded' ({work / 'scripts' / 'unguarded.py'}) raised NewRunRefused: importing "
                               "it started a new Experiment: keep the script's run under `if __name__ == \"__main__\":` "
                               "so that loading its actions does not run it again at ")
    assert len(list((work / "runs").glob("*.jsonl"))) == 2  # the refused import started no run



def test_a_script_outside_the_runs_folders_is_never_imported(tmp_path: Path) -> None:
    work, outside = tmp_path / "proj", tmp_path / "elsewhere"
    work.mkdir()
    outside.mkdir()
    marker = tmp_path / "imported"
    (outside / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n" + SCRIPT.format(body=""))
    (work / "go.py").write_text(SCRIPT.format(body='if __name__ == "__main__":\n'
                                                   '    with Experiment("x", root="runs") as exp:\n'
                                                   '        exp.add_action(Greet(who="you"))\n'))
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    subprocess.run([sys.executable, "go.py"], cwd=work, env=env_for(env), check=True, timeout=30, stdin=subprocess.DEVNULL)
    path = next((work / "runs").glob("*.jsonl"))
    (rec,) = [r for r in read_lines(path) if r["type"] == "action"]
    forged = {**rec, "seq": 99, "name": "Forged", "class": "evil:Greet", "file": str(outside / "evil.py")}
    with open(path, "a") as f:
        f.write(json.dumps(forged) + "\n")
    p = cli_noinput("actions", "run", "latest", "Forged", "--root", "runs", cwd=work, env=env)
    assert (p.returncode, p.stdout) == (2, "") and not marker.exists()
    assert p.stderr == (f"exprag-plus actions: error: cannot load action 'Forged' (evil:Greet): its script "
                        f"{outside / 'evil.py'} is outside the current project {work} (current code is imported only from "
                        "there); it is not imported\n")
    p = cli_noinput("actions", "run", "latest", "Greet", "--root", "runs", "--set", "greeting=hey", cwd=work, env=env)
    assert (p.returncode, p.stdout) == (0, "hello hey you\n")


def test_current_code_comes_only_from_the_current_project_never_from_a_copied_run(tmp_path: Path) -> None:
    """A run file copied from another folder names that folder as its cwd: nothing is imported from it."""
    work, other = tmp_path / "proj", tmp_path / "elsewhere"
    work.mkdir()
    other.mkdir()
    marker = tmp_path / "imported"
    (other / "tool.py").write_text(f"open({str(marker)!r}, 'a').close()\n" + SCRIPT.format(body=""))
    (other / "go.py").write_text(SCRIPT.format(body='if __name__ == "__main__":\n'
                                                    '    import tool\n'
                                                    '    with Experiment("x", root="runs") as exp:\n'
                                                    '        exp.add_action(tool.Greet(who="you"))\n'
                                                    '        exp.add_action(Greet(who="me"), name="Local")\n'))
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    subprocess.run([sys.executable, "go.py"], cwd=other, env=env_for(env), check=True, timeout=30, stdin=subprocess.DEVNULL)
    marker.unlink()
    (work / "runs").mkdir()
    (src,) = (other / "runs").glob("*.jsonl")
    shutil.copy(src, work / "runs" / src.name)
    p = cli_noinput("actions", "run", "latest", "Greet", "--root", "runs", cwd=work, env=env)
    assert (p.returncode, p.stdout) == (2, "") and not marker.exists()
    assert "cannot import module 'tool': no module named 'tool'" in p.stderr and str(other) not in p.stderr
    p = cli_noinput("actions", "run", "latest", "Local", "--root", "runs", cwd=work, env=env)
    assert (p.returncode, p.stdout) == (2, "") and "outside the current project" not in p.stderr
    assert f"its script {work / 'go.py'} does not exist" in p.stderr and not marker.exists()
    (work / "tool.py").write_text(SCRIPT.format(body="").replace('"hello "', '"hi from here, "'))
    p = cli_noinput("actions", "run", "latest", "Greet", "--root", "runs", cwd=work, env=env)
    assert (p.returncode, p.stdout) == (0, "hi from here, hi you\n") and not marker.exists()


def test_code_run_uses_the_runs_own_commit(repo: Path) -> None:
    (repo / "versioned.py").write_text(textwrap.dedent('''
        from exprag_plus import Action

        class Version(Action):
            def execute(self, interaction):
                return "v1"
    '''))
    (repo / "sub").mkdir()
    git(repo, "add", "versioned.py")
    git(repo, "commit", "-q", "-m", "v1")
    (repo / "sub" / "go.py").write_text(textwrap.dedent('''
        import sys
        sys.path.insert(0, "..")
        import versioned
        from exprag_plus import Experiment
        with Experiment("versioned") as exp:
            exp.add_action(versioned.Version())
    '''))
    subprocess.run([sys.executable, "go.py"], cwd=repo / "sub", env=env_for(), check=True, timeout=30, stdin=subprocess.DEVNULL)
    (repo / "versioned.py").write_text((repo / "versioned.py").read_text().replace('"v1"', '"v2"'))
    p = cli_noinput("actions", "run", "latest", "Version", "--json", cwd=repo)
    assert p.returncode == 0 and j(p.stdout)["result"] == "v2"
    p = cli_noinput("actions", "run", "latest", "Version", "--code", "run", "--json", cwd=repo)
    assert p.returncode == 0 and j(p.stdout)["result"] == "v1", p.stderr
    assert git(repo, "worktree", "list").count("\n") == 1  # the temporary worktree is gone
    p = cli_noinput("actions", "run", "latest", "Version", "--code", "run", "--keep", cwd=repo)
    assert p.returncode == 0 and p.stdout == "v1\n" and "kept in a git worktree" in p.stderr
    assert git(repo, "worktree", "list").count("\n") == 2
    recs = [r for r in read_lines(next((repo / ".runs").glob("*.jsonl"))) if r["type"] == "action_run"]
    commit = [r for r in read_lines(next((repo / ".runs").glob("*.jsonl")))][0]["git"]["commit"]
    assert [r["code"] for r in recs] == [{"mode": "current", "commit": None}, {"mode": "run", "commit": commit},
                                         {"mode": "run", "commit": commit}]


# --- a real terminal -------------------------------------------------------------------------------


def _pty_session(args: List[str], cwd: Path, steps: List[Tuple[str, str]], env: Dict[str, str],
                 timeout: float = 20) -> Tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "exprag_plus", *args], cwd=cwd, env=env_for(env),
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout

    def read_until(text: Optional[str]) -> None:
        nonlocal seen
        while text is None or text.encode() not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                pytest.fail(f"timed out waiting for {text!r}; terminal shows:\n{seen.decode(errors='replace')}")
            ready, _, _ = select.select([master], [], [], min(left, 0.2))
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    if text is None:
                        return
                    pytest.fail(f"terminal closed before {text!r}:\n{seen.decode(errors='replace')}")
                seen += chunk

    try:
        for expect, answer in steps:
            read_until(expect)
            os.write(master, answer.encode())
        read_until(None)
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), seen.decode(errors="replace").replace("\r\n", "\n")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_terminal_numbered_choice_reask_and_set_hint(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "acts_t.py").write_text(ACTIONS_SOURCE)
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    run_python("""
        import acts_t
        from exprag_plus import Experiment
        with Experiment("x", root="runs") as exp:
            exp.add_action(acts_t.ExportToHub(model="m"))
    """, cwd=work, env=env)
    rc, screen = _pty_session(["actions", "run", "latest", "ExportToHub", "--root", "runs"], work,
                              [("choose 1-2: ", "9\n"), ("try again", "hf hub\n"),
                               ("Hub model name: [Enter: my-model]  (prefill: --set name=...): ", "\n"),
                               ("Private repo? [y/N]  (prefill: --set private=...): ", "maybe\n"),
                               ("use true/false, yes/no, y/n or 1/0; try again", "Y\n")], env)
    assert rc == 0, screen
    assert "Export to:  (prefill: --set target=...)\n  1) HF Hub\n  2) Local folder\nchoose 1-2: " in screen
    assert "'9' is not a choice: type a number from 1 to 2 or one of 'HF Hub', 'Local folder'; try again" in screen
    assert '"pushed": "my-model"' in screen and '"private": true' in screen
    rc, screen = _pty_session(["actions", "run", "latest", "ExportToHub", "--root", "runs", "--set", "target=Local folder"],
                              work, [("Output folder:  (prefill: --set folder=...): ", "\n"),
                                     ("an answer is needed", "out dir\n")], env)
    assert rc == 0 and '"saved": "out dir"' in screen, screen
    assert "Export to: Local folder  (from --set target)" in screen
    recs = [r for r in read_lines(next((work / "runs").glob("*.jsonl"))) if r["type"] == "action_run"]
    assert [r["answers"] for r in recs] == [{"target": "HF Hub", "name": "my-model", "private": True},
                                            {"target": "Local folder", "folder": "out dir"}]



def test_terminal_choices_that_are_numbers_are_not_numbered() -> None:
    from exprag_plus.actions import TerminalInteraction

    screen = io.StringIO()
    term = TerminalInteraction(input=io.StringIO("1\n"), output=screen)
    assert term.choice("gpus", "GPUs:", ["2", "1"]) == "1"  # the text typed, not the first choice listed
    assert screen.getvalue() == "GPUs:  (prefill: --set gpus=...)\n  - 2\n  - 1\ntype one of them: "
    screen = io.StringIO()
    term = TerminalInteraction(input=io.StringIO("3\n"), output=screen)
    assert term.choice("n", "Layers:", [1, 2, 4]) == 4  # no number names another choice: numbered as usual
    assert "  3) 4\nchoose 1-3: " in screen.getvalue()


# --- the example -----------------------------------------------------------------------------------


def test_example_export_best_model_end_to_end(tmp_path: Path) -> None:
    env = {"GIT_CEILING_DIRECTORIES": str(tmp_path)}
    (tmp_path / "examples").mkdir()  # the project's own copy: action code is imported only from the project
    shutil.copy(ROOT / "examples" / "export_best_model.py", tmp_path / "examples")
    subprocess.run([sys.executable, "examples/export_best_model.py"], cwd=tmp_path, env=env_for(env),
                   check=True, timeout=60, capture_output=True, stdin=subprocess.DEVNULL)
    p = cli_noinput("actions", "run", "latest", "ExportBestModel", "--set", f"folder={tmp_path / 'best'}", "--json",
                    cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    out = j(p.stdout)
    assert out["status"] == "ok" and out["answers"] == {"folder": str(tmp_path / "best")}
    best = out["result"]["run_id"]
    assert (tmp_path / "best" / "model.json").read_text() == (tmp_path / ".runs" / best / "model.json").read_text()
    p = cli_noinput("best", "metrics.val_acc", "--json", cwd=tmp_path, env=env)
    assert j(p.stdout)["run"]["id"] == best
    p = cli_noinput("actions", "run", "latest", "ExportBestModel", "--set", f"folder={tmp_path / 'best'}", cwd=tmp_path, env=env)
    assert p.returncode == 1 and "model.json exists; pass --set overwrite=true to replace it" in p.stderr
    p = cli_noinput("actions", "list", "--json", cwd=tmp_path, env=env)
    (row,) = j(p.stdout)["actions"]
    assert (row["name"], row["times_run"], row["last_status"]) == ("ExportBestModel", 2, "error")


def test_an_action_reading_stdin_without_a_terminal_never_hangs(tmp_path: Path) -> None:
    """An agent's stdin is often a pipe that stays open: the action must read end-of-file, not wait."""
    (tmp_path / "reader.py").write_text(textwrap.dedent('''
        from exprag_plus import Action, Experiment

        class Reader(Action):
            def execute(self, interaction):
                return input("type something: ")

        if __name__ == "__main__":
            with Experiment("reads stdin", root="runs") as exp:
                exp.add_action(Reader())
    '''))
    env = env_for({"GIT_CEILING_DIRECTORIES": str(tmp_path.parent)})
    subprocess.run([sys.executable, "reader.py"], cwd=tmp_path, env=env, check=True, timeout=30)
    p = subprocess.Popen([sys.executable, "-m", "exprag_plus", "actions", "run", "latest", "Reader", "--root", "runs",
                          "--json"], cwd=tmp_path, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        p.wait(timeout=30)  # stdin is still open: a waiting input() would never return
    finally:
        if p.poll() is None:
            p.kill()
        p.stdin.close()
    out = p.stdout.read()
    p.stdout.close()
    p.stderr.close()
    assert p.returncode == 1 and json.loads(out)["error"]["type"] == "EOFError"
