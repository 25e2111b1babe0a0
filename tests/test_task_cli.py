"""Task schemas as recorded runs: exp.run_task and the `task` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exprag_plus import Experiment
from exprag_plus.schema import SchemaError, TaskFailed, TaskSchema

from conftest import ROOT, read_lines

SCHEMAS = ROOT / "examples" / "schemas"


def test_run_task_records_a_task_and_returns_outputs(runs_dir: Path) -> None:
    schema = TaskSchema.from_file(SCHEMAS / "seed_intermediate_p2.yaml")
    with Experiment("with task", root=str(runs_dir)) as exp:
        assert exp.run_task(schema, {"p1": 1}) == {"p3": 3}
        assert exp.run_task(str(SCHEMAS / "seed_p1_to_p2.yaml"), {"p1": 41}) == {"p2": 42}
        with pytest.raises(SchemaError, match="missing required input 'p1'"):
            exp.run_task(schema, {})
        failing = TaskSchema.from_dict({"objective": "bad", "inputs": ["p1"], "outputs": ["p2"], "actions": [
            {"commands": [{"command": "echo <<parameter:p1>>; echo oops >&2; exit 3", "stdout": "<<parameter:p2>>"}]}]})
        with pytest.raises(TaskFailed, match="exit code 3"):
            exp.run_task(failing, {"p1": 1})
    tasks = [r for r in read_lines(exp.path) if r["type"] == "task"]
    assert [t["status"] for t in tasks] == ["ok", "ok", "failed"]
    first = tasks[0]
    assert first["objective"] == "t1" and first["inputs"] == {"p1": 1} and first["outputs"] == {"p3": 3}
    assert [c["command"] for c in first["commands"]] == ["echo $((1 + 1))", "echo $((2 + 1))"]
    assert first["commands"][0]["exit_code"] == 0 and first["commands"][0]["stdout"] == "2\n"
    assert first["workdir"] == str(runs_dir / exp.run_id / "tasks" / "0") and Path(first["workdir"]).is_dir()
    assert tasks[2]["commands"][0]["exit_code"] == 3 and "oops" in tasks[2]["commands"][0]["stderr"]
    assert "exit code 3" in tasks[2]["error"] and tasks[2]["index"] == 2


def test_task_info(main) -> None:
    rc, out, _ = main("task", "info", str(SCHEMAS / "seed_intermediate_p2.yaml"))
    assert rc == 0 and out.splitlines()[:5] == ["Task schema: t1", "Inputs:", "  p1    required", "Outputs:", "  p3"]
    rc, out, _ = main("task", "info", str(SCHEMAS / "sweep_stats.yaml"), "--json")
    d = json.loads(out)
    assert d["objective"] == "sweep_stats" and [i["parameter"] for i in d["inputs"]] == ["values", "label", "scale"]


def test_task_run_seed_examples(main, runs_dir: Path) -> None:
    for name, inputs, outputs in [("seed_p1_to_p2.yaml", ["p1=1"], {"p2": 2}),
                                  ("seed_intermediate_p2.yaml", ["p1=1"], {"p3": 3})]:
        args = ["task", "run", str(SCHEMAS / name), "--root", str(runs_dir), "--json"]
        for i in inputs:
            args += ["--input", i]
        rc, out, err = main(*args)
        d = json.loads(out)
        assert rc == 0 and d["outputs"] == outputs and d["status"] == "ok"
        assert (runs_dir / f"{d['run_id']}.jsonl").exists()
    rc, out, err = main("task", "run", str(SCHEMAS / "seed_p1_to_p2.yaml"), "--input", "p1=5", "--root", str(runs_dir))
    assert rc == 0 and out == '{"p2": 6}\n' and err.startswith("exprag-plus: recorded run ")


def test_task_run_sequences(main, runs_dir: Path) -> None:
    rc, out, _ = main("task", "run", str(SCHEMAS / "seed_intermediate_p2.yaml"), "--input", "p1=[1,2,3]",
                      "--each", "p1", "--root", str(runs_dir), "--json")
    d = json.loads(out)
    assert rc == 0 and [(e["inputs"]["p1"], e["outputs"]["p3"]) for e in d["elements"]] == [(1, 3), (2, 4), (3, 5)]
    run = read_lines(runs_dir / f"{d['run_id']}.jsonl")
    assert [r["outputs"] for r in run if r["type"] == "task"] == [{"p3": 3}, {"p3": 4}, {"p3": 5}]
    rc, out, _ = main("task", "run", str(SCHEMAS / "sweep_stats.yaml"), "--root", str(runs_dir), "--json")
    d = json.loads(out)
    assert rc == 0 and [e["outputs"]["total"] for e in d["elements"]] == [8.0, 80.0]
    assert d["elements"][0]["outputs"]["summary"] == {"label": "run #1; not a command", "total": 8.0}


def test_task_run_dry_run_runs_nothing(main, runs_dir: Path) -> None:
    rc, out, _ = main("task", "run", str(SCHEMAS / "seed_intermediate_p2.yaml"), "--input", "p1=1", "--dry-run",
                      "--root", str(runs_dir))
    assert rc == 0 and out == "echo $((1 + 1))\necho $((<<parameter:p2>> + 1))\n"
    assert not runs_dir.exists()


@pytest.mark.parametrize("args, code, fragment", [
    (["--input", "p1"], 2, "--input 'p1': write NAME=VALUE"),
    ([], 2, "missing required input 'p1'"),
    (["--input", "p9=1"], 2, "unknown input 'p9'"),
    (["--input", "p1=1", "--each", "p1"], 2, "must be a non-empty JSON list"),
    (["--input", "p1=1.5"], 1, "exit code 1"),  # bash has no float arithmetic
    (["--input", "p1=x y"], 2, "inside $((...)) or ((...)) arithmetic"),
])
def test_task_run_errors(main, runs_dir: Path, tmp_path: Path, args, code, fragment) -> None:
    rc, out, err = main("task", "run", str(SCHEMAS / "seed_p1_to_p2.yaml"), "--root", str(runs_dir), *args)
    assert rc == code and fragment in err and "Traceback" not in err
    assert err.strip().count("\n") == (1 if code == 1 else 0)  # a failure also names the recorded run


def test_task_run_bad_schema_file(main, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("objective: t\ninputs:\n  - parameter: p1\nactions:\n  - comands:\n      - command: echo hi\n")
    rc, out, err = main("task", "info", str(bad))
    assert rc == 2 and "comands" in err and "commands" in err and err.count("\n") == 1


def test_values_never_reach_the_shell_as_code(main, runs_dir: Path, tmp_path: Path) -> None:
    schema = tmp_path / "echo.yaml"
    schema.write_text("objective: echo\ninputs: [p1]\noutputs: [p2]\nactions:\n"
                      "  - commands:\n      - command: printf '%s' <<parameter:p1>>\n"
                      "        stdout: <<str(parameter:p2)>>\n")
    canary = tmp_path / "CANARY"
    for evil in [f"hi; touch {canary}", f"$(touch {canary})", f"`touch {canary}`", f"a\ntouch {canary}"]:
        rc, out, err = main("task", "run", str(schema), "--input", f"p1={evil}", "--root", str(runs_dir), "--json")
        assert rc == 0 and json.loads(out)["outputs"]["p2"] == evil
    assert not canary.exists()


@pytest.mark.parametrize("command", [
    "echo $((<<parameter:p1>> + 1))",
    "(( <<parameter:p1>> > 0 )) && echo yes",
    "[[ <<parameter:p1>> -eq 1 ]] && echo yes",
    "let 'y=<<parameter:p1>>'; echo $y",
    "a=(1 2); echo ${a[<<parameter:p1>>]}",
    "echo $[ <<parameter:p1>> + 1 ]",
    "a=(1 2); a[<<parameter:p1>>]=3",
    "a=([<<parameter:p1>>]=3)",
    "declare -i n=<<parameter:p1>>",
    "x=abc; echo ${x:<<parameter:p1>>}",
    "x=abc; echo ${x:0:<<parameter:p1>>}",
])
def test_arithmetic_contexts_take_only_numbers(tmp_path: Path, command: str) -> None:
    """bash runs `$(...)` and `a[$(...)]` found in arithmetic even inside single quotes: refuse text there."""
    ts = TaskSchema.from_dict({"objective": "arith", "inputs": ["p1"], "actions": [{"commands": [{"command": command}]}]})
    canary = tmp_path / "CANARY"
    for evil in [f"$(touch {canary})", f"a[$(touch {canary})]", f"`touch {canary}`"]:
        with pytest.raises(SchemaError, match="only numbers may go there"):
            ts.run({"p1": evil}, tmp_path / "w")
    assert not canary.exists()
    ts.run({"p1": 1}, tmp_path / "w")  # numbers still work
    assert TaskSchema.from_dict({"objective": "s", "inputs": ["p1"], "actions": [{"commands": [
        {"command": "[ <<parameter:p1>> = x ] || echo <<parameter:p1>>"}]}]}).resolve_commands(
        {"p1": "a b"}) == ["[ 'a b' = x ] || echo 'a b'"]  # `[`/test is not arithmetic: text is fine there


@pytest.mark.parametrize("command", [
    'printf %s "v=<<parameter:p1>>."',
    "printf %s 'v=<<parameter:p1>>.'",
    "printf %s $'v=<<parameter:p1>>.'",
    'printf %s "$(printf %s "v=<<parameter:p1>>.")"',
    'printf %s "`printf %s v=<<parameter:p1>>.`"',
    "cat <<EOF\nv=<<parameter:p1>>.\nEOF",
    "cat <<'EOF'\nv=<<parameter:p1>>.\nEOF",
    "cat <<-EOF\n\tv=<<parameter:p1>>.\n\tEOF",
    "true # <<parameter:p1>>\nprintf %s 'v=<<parameter:p1>>.'",
])
def test_values_inside_quotes_and_here_documents_stay_text(tmp_path: Path, command: str) -> None:
    """shlex.quote alone is safe only unquoted: in "..." and here-documents `$(...)` ran, '...' was ended."""
    ts = TaskSchema.from_dict({"objective": "q", "inputs": ["p1"], "outputs": ["p2"], "actions": [{"commands": [
        {"command": command, "stdout": "<<str(parameter:p2)>>"}]}]})
    canary = tmp_path / "CANARY"
    for value in [f"$(touch {canary})", f"`touch {canary}`", f"it's \\ \"q\" $HOME {{a,b}} * ;", "plain"]:
        out = ts.run({"p1": value}, tmp_path / "w").outputs["p2"]
        assert out.rstrip("\n") == f"v={value}."
    assert not canary.exists()
    if "<<" in command.replace("<<parameter", ""):
        for evil in ["x\nEOF\ntouch " + str(canary) + " #", "EOF"]:
            with pytest.raises(SchemaError, match="here-document"):
                ts.run({"p1": evil}, tmp_path / "w")
        assert not canary.exists()


def test_deeply_nested_schema_files_are_one_line_errors(main, tmp_path: Path) -> None:
    for name, text in [("deep.yaml", "objective: x\nactions: " + "[" * 3000 + "]" * 3000 + "\n"),
                       ("deep.json", '{"objective": "x", "actions": ' + "[" * 100000 + "]" * 100000 + "}")]:
        (tmp_path / name).write_text(text)
        rc, out, err = main("task", "info", str(tmp_path / name))
        assert rc == 2 and "nested" in err and "Traceback" not in err and "internal error" not in err
