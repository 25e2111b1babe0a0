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
    for i, e in enumerate(d["elements"]):  # one run per element, as under Slurm: `best` ranks the elements
        run = read_lines(runs_dir / f"{e['run_id']}.jsonl")
        assert run[0]["sweep"] == d["sweep_id"] and run[0]["metadata"]["task"]["element"] == i
        assert run[0]["metadata"]["task"]["inputs"] == {"p1": i + 1}
        assert [r["outputs"] for r in run if r["type"] == "task"] == [{"p3": i + 3}]
        assert run[-1]["summary"]["p3"]["last"] == i + 3
    rc, out, _ = main("best", "p3", "--min", "--where", f"sweep={d['sweep_id']}", "--root", str(runs_dir), "--json")
    assert json.loads(out)["run"]["id"] == d["elements"][0]["run_id"]
    assert json.loads(out)["run"]["metadata"]["task"]["inputs"] == {"p1": 1}
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
    (["--input", "p1=x y"], 2, "the value of parameter 'p1' is not plain: ' ' at position 2 in 'x y'"),
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


def hostile_cli(tmp_path: Path) -> list:
    return ["$(touch PWNED)", "`touch PWNED`", "a[$(touch PWNED)]", ";touch PWNED", f"--output={tmp_path / 'FILE'}",
            "-rf", "it's", 'say "hi"', "a\ntouch PWNED", "a b", "*", "~", "{a,b}", f"{tmp_path}/x;touch PWNED"]


def test_hostile_values_are_refused_with_exit_2_before_anything_runs(main, runs_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "FILE").write_text("precious\n")
    schema = tmp_path / "hostile.yaml"
    schema.write_text("objective: hostile\ninputs: [p1]\nactions:\n  - commands:\n      - command: touch EARLIER\n"
                      "  - commands:\n      - command: sort <<parameter:p1>> < /dev/null; echo $((<<parameter:p1>> + 1))\n")
    for value in hostile_cli(tmp_path):
        for args in (["--input", f"p1={value}"], ["--input", f"p1={value}", "--dry-run"],
                     ["--input", "p1=" + json.dumps([1, value]), "--each", "p1"]):
            rc, out, err = main("task", "run", str(schema), *args, "--root", str(runs_dir))
            assert rc == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err, (value, err)
            assert "the value of parameter 'p1'" in err and "is not plain" in err and '"$EXPRAG_PARAM_p1"' in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "gitconfig-global") == ["FILE", "hostile.yaml"]
    assert (tmp_path / "FILE").read_text() == "precious\n"
    assert not runs_dir.exists()  # refused before a run was even started: element [1] ran nothing either


def test_any_text_reaches_the_command_through_its_environment_variable(main, runs_dir: Path, tmp_path: Path) -> None:
    schema = tmp_path / "echo.yaml"
    schema.write_text("objective: echo\ninputs: [p1]\noutputs: [p2]\nactions:\n"
                      "  - commands:\n      - command: printf '%s' \"$EXPRAG_PARAM_p1\"\n"
                      "        stdout: <<str(parameter:p2)>>\n")
    for value in hostile_cli(tmp_path):
        rc, out, err = main("task", "run", str(schema), "--input", f"p1={value}", "--root", str(runs_dir), "--json")
        assert rc == 0 and json.loads(out)["outputs"]["p2"] == value, err
    assert not (tmp_path / "PWNED").exists() and not list(runs_dir.rglob("PWNED"))


def test_deeply_nested_schema_files_are_one_line_errors(main, tmp_path: Path) -> None:
    for name, text in [("deep.yaml", "objective: x\nactions: " + "[" * 3000 + "]" * 3000 + "\n"),
                       ("deep.json", '{"objective": "x", "actions": ' + "[" * 100000 + "]" * 100000 + "}")]:
        (tmp_path / name).write_text(text)
        rc, out, err = main("task", "info", str(tmp_path / name))
        assert rc == 2 and "nested" in err and "Traceback" not in err and "internal error" not in err


def test_a_task_that_fails_fails_its_run(main, runs_dir: Path, tmp_path: Path) -> None:
    """Trial 6: a failed task's run read `completed` (and would have ranked among the results)."""
    schema = tmp_path / "fails.yaml"
    schema.write_text("objective: fails\ninputs: [n]\nactions:\n  - commands:\n"
                      "      - command: test <<parameter:n>> -lt 2\n")
    rc, out, err = main("task", "run", str(schema), "--input", "n=3", "--root", str(runs_dir), "--json")
    assert rc == 1 and json.loads(out)["status"] == "failed"
    end = read_lines(next(runs_dir.glob("*.jsonl")))[-1]
    assert end["type"] == "run_end" and end["status"] == "failed" and end["error"]["type"] == "TaskFailed"
    rc, out, err = main("task", "run", str(schema), "--input", "n=[1,3,5]", "--each", "n", "--keep-going",
                        "--root", str(runs_dir), "--json")
    assert rc == 1 and [e["status"] for e in json.loads(out)["elements"]] == ["ok", "failed", "failed"]
    assert "(2 of 3 elements failed)" in err
    rc, out, _ = main("runs", "--where", "status=failed", "--root", str(runs_dir), "--json")
    runs = json.loads(out)["runs"]
    assert len(runs) == 3  # the first task, and two elements of the sweep (each its own run)
    rc, out, _ = main("show", runs[0]["id"], "--root", str(runs_dir), "--json")
    assert "exit code 1 from 'test 5 -lt 2'" in json.loads(out)["error"]["message"]
    rc, out, _ = main("task", "run", str(schema), "--input", "n=1", "--root", str(runs_dir), "--json")
    assert rc == 0 and json.loads(out)["status"] == "ok"
    assert main("runs", "--where", "status=completed", "--root", str(runs_dir), "--json")[1].count('"id"') == 2
