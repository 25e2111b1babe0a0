"""The query CLI, driven for real: human and --json output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import math
from pathlib import Path
from typing import Dict

import pytest

from exprag_plus import Experiment
from exprag_plus.experiment import ENV_REPLAY_OF

from conftest import cli


@pytest.fixture
def sweep(runs_dir: Path) -> Dict[str, Experiment]:
    """Four runs: a small lr sweep, one that diverged to NaN, one that failed."""
    made = {}
    for lr in (0.01, 0.1):
        with Experiment("sweep", metadata={"hparams": {"lr": lr, "bs": 32}}, root=str(runs_dir)) as exp:
            for step in range(10):
                exp.track({"step": step, "metrics": {"acc": 0.5 + step * lr, "loss": 1.0 / (step + 1)}})
            exp.track({"step": 10, "metrics": {"acc": 0.5 + 8 * lr}})  # peaked before the end
        made[f"lr{lr}"] = exp
    with Experiment("diverged", metadata={"hparams": {"lr": 10.0, "bs": 64}}, root=str(runs_dir)) as exp:
        exp.track({"step": 0, "metrics": {"acc": 0.55, "loss": 2.0}})
        exp.track({"step": 1, "metrics": {"acc": 0.1, "loss": math.nan}})
    made["nan"] = exp
    try:
        with Experiment("broken", metadata={"hparams": {"lr": 0.05, "bs": 32}}, root=str(runs_dir)) as exp:
            exp.track({"step": 0, "metrics": {"acc": 0.6}})
            raise RuntimeError("out of memory")
    except RuntimeError:
        pass
    made["failed"] = exp
    return made


def j(out: str):
    return json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON literal {c}"))


def test_runs_human_and_json(main, runs_dir: Path, sweep) -> None:
    rc, out, err = main("runs", "--root", str(runs_dir))
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STARTED", "(UTC)", "NAME", "STATUS", "COMMIT", "metrics.acc", "metrics.loss"]
    assert [l.split()[0] for l in lines[1:5]] == [sweep[k].run_id[-8:] for k in ("failed", "nan", "lr0.1", "lr0.01")]
    assert "failed" in lines[1] and "NaN" in lines[2]
    rc, out, err = main("runs", "--root", str(runs_dir), "--json")
    data = j(out)
    assert rc == 0 and data["total"] == 4 and data["matched"] == 4 and data["shown"] == 4
    row = data["runs"][1]
    assert set(row) == {"id", "short_id", "started", "name", "status", "commit", "branch", "dirty", "replay_of",
                        "metadata", "metrics", "tags", "latest_note"}
    assert row["metadata"] == {"hparams": {"lr": 10.0, "bs": 64}}
    assert row["metrics"]["metrics.loss"] == "NaN" and row["status"] == "completed"


def test_runs_where_sort_limit(main, runs_dir: Path, sweep) -> None:
    rc, out, err = main("runs", "--root", str(runs_dir), "--where", "hparams.lr<1", "--where", "status=completed",
                        "--sort", "-metrics.acc", "--json")
    names = [(r["name"], r["metrics"]["metrics.acc"]) for r in j(out)["runs"]]
    assert rc == 0 and [n for n, _ in names] == ["sweep", "sweep"] and names[0][1] > names[1][1]
    rc, out, err = main("runs", "--root", str(runs_dir), "--where", "name~^sw", "--where", "metrics.acc:max>=1.2",
                        "--json")
    assert [r["id"] for r in j(out)["runs"]] == [sweep["lr0.1"].run_id]
    rc, out, err = main("runs", "--root", str(runs_dir), "--limit", "2", "--json")
    assert rc == 0 and j(out)["shown"] == 2
    assert err == "exprag-plus: showing 2 of 4 matching runs; use --limit 0 for all\n"
    rc, out, err = main("runs", "--root", str(runs_dir), "--where", "hparams.bs!=32", "--json")
    assert [r["name"] for r in j(out)["runs"]] == ["diverged"]
    rc, out, _ = main("runs", "--root", str(runs_dir), "--where", "hparams.lr>100")
    assert rc == 0 and out == "no run matches (4 runs)\n"
    rc, out, _ = main("runs", "--root", str(runs_dir), "--where", "metrics.loss!=NaN", "--json")
    assert sorted(r["name"] for r in j(out)["runs"]) == ["sweep", "sweep"]  # the diverged run is out
    rc, out, _ = main("runs", "--root", str(runs_dir), "--where", "metrics.loss=NaN", "--json")
    assert [r["name"] for r in j(out)["runs"]] == ["diverged"]



def test_where_on_text_lists_and_dicts(main, runs_dir: Path) -> None:
    for i, md in enumerate([{"opt": {"name": "adam", "betas": [0.9, 0.99]}, "size": 3},
                            {"opt": {"betas": [0.9, 0.999], "name": "sgd"}, "size": "xl"}]):
        Experiment(f"r{i}", metadata=md, root=str(runs_dir), snapshot=False).close()

    def names(*where: str):
        rc, out, err = main("runs", "--root", str(runs_dir), *[x for w in where for x in ("--where", w)], "--json")
        assert rc == 0, err
        return sorted(r["name"] for r in j(out)["runs"])

    assert names('opt={"betas": [0.9, 0.99], "name": "adam"}') == ["r0"]  # key order does not matter
    assert names('opt={"name": "sgd", "betas": [0.9, 0.999]}') == ["r1"]
    assert names("opt.betas=[0.9,0.999]") == ["r1"]
    assert names("size>2") == ["r0"]  # "xl" is not greater than 2
    assert names("size<100") == ["r0"] and names("size!=3") == ["r1"]

@pytest.mark.parametrize("args, message", [
    (["runs", "--where", "hparams.lrr<1"], "exprag-plus runs: error: --where 'hparams.lrr<1': no run has the field, "
     "metadata or metric path 'hparams.lrr'; nearest: hparams.lr, hparams.bs (see `exprag-plus keys`)\n"),
    (["runs", "--where", "lr"], "exprag-plus runs: error: bad --where 'lr': write PATH OP VALUE with OP one of "
     "<= >= != = < > ~, e.g. 'hparams.lr<0.01'\n"),
    (["runs", "--where", "name~("], None),
    (["runs", "--sort", "metrics.nope"], None),
    (["runs", "--limit", "many"], "exprag-plus: error: argument --limit: invalid count 'many': give a whole number "
     "(0 for no limit) (see `exprag-plus runs --help`)\n"),
    (["runs", "--limit", "-1"], "exprag-plus: error: argument --limit: invalid count '-1': it cannot be negative "
     "(0 for no limit) (see `exprag-plus runs --help`)\n"),
    (["runs", "--where", "metrics.acc>high"], "exprag-plus runs: error: bad --where 'metrics.acc>high': metrics.acc "
     "holds numbers, and 'high' is not one\n"),
    (["runs", "--where", "metrics.acc=>0.5"], "exprag-plus runs: error: bad --where 'metrics.acc=>0.5': '=>' is no "
     "operator; use one of <= >= != = < > ~ (e.g. 'metrics.acc>=VALUE')\n"),  # it matched nothing, silently
    (["runs", "--where", "name =~ sw"], None),
    (["best", "metrics.accuracy"], "exprag-plus best: error: metric 'metrics.accuracy': no run has the metric path "
     "'metrics.accuracy'; nearest: metrics.acc, metrics.loss (see `exprag-plus keys`)\n"),
    (["show", "nonexistent"], None),
    (["show", "../../../etc/passwd"], None),
    (["history", "latest~1", "metrics.lss"], None),
    (["compare", "latest"], None),
    (["frobnicate"], None),
    ([], None),
])
def test_bad_input_is_one_line_exit_2(main, runs_dir: Path, sweep, args, message) -> None:
    rc, out, err = main(*args[:1], "--root", str(runs_dir), *args[1:]) if args else main()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err and "error" in err
    if message:
        assert err == message


def test_show(main, runs_dir: Path, sweep) -> None:
    failed = sweep["failed"]
    rc, out, err = main("show", failed.run_id[-8:], "--root", str(runs_dir))
    assert rc == 0
    assert out.startswith(f"run       {failed.run_id} ({failed.run_id[-8:]})  'broken'\nstatus    failed after ")
    assert "error     RuntimeError: out of memory" in out and "hparams.lr = 0.05" in out
    rc, out, _ = main("show", "latest", "--root", str(runs_dir), "--json")
    d = j(out)
    assert d["status"] == "failed" and d["error"]["type"] == "RuntimeError" and d["records"] == {
        "run_start": 1, "track": 1, "run_end": 1}
    assert d["summary"]["metrics.acc"]["last"] == 0.6 and d["metadata"]["hparams"]["bs"] == 32


def test_keys(main, runs_dir: Path, sweep) -> None:
    rc, out, _ = main("keys", "--root", str(runs_dir), "--json")
    d = j(out)
    assert rc == 0 and d["runs"] == 4
    assert d["metadata"]["hparams.lr"] == {"runs": 4, "distinct": 4, "values": [0.01, 0.1, 10.0, 0.05]}
    assert d["metadata"]["hparams.bs"] == {"runs": 4, "distinct": 2, "values": [32, 64]}
    assert d["metrics"]["metrics.loss"]["runs"] == 3 and d["metrics"]["metrics.acc"]["max"] == pytest.approx(1.4)
    rc, out, _ = main("keys", "--root", str(runs_dir))
    assert "METADATA PATH" in out and "hparams.lr" in out and "METRIC PATH" in out
    rc, out, _ = main("keys", "latest", "--root", str(runs_dir), "--json")
    assert list(j(out)["metrics"]) == ["metrics.acc"] and list(j(out)["axes"]) == ["step"]


def test_best_max_min_final(main, runs_dir: Path, sweep) -> None:
    rc, out, _ = main("best", "metrics.acc", "--root", str(runs_dir), "--json")
    d = j(out)
    assert rc == 0 and d["run"]["id"] == sweep["lr0.1"].run_id
    assert d["best"] == pytest.approx(1.4) and d["best_step"] == 9 and d["last"] == pytest.approx(1.3)
    assert d["rule"].startswith("highest best value") and d["considered"] == 3 and d["left_out"] == {"failed": 1}
    rc, out, _ = main("best", "metrics.loss", "--min", "--final", "--root", str(runs_dir), "--json")
    d = j(out)
    assert d["rule"] == "lowest final (last tracked) value, among completed runs"
    assert d["nonfinite"] == 1 and d["without_metric"] == 1  # one ended in NaN, one never tracked a loss
    rc, out, _ = main("best", "metrics.acc", "--where", "hparams.lr<0.05", "--root", str(runs_dir))
    assert out.splitlines()[0] == ("best run by metrics.acc (highest best value over each run's history "
                                   "(max of all tracked values), among completed runs):")
    assert sweep["lr0.01"].run_id[-8:] in out.splitlines()[1]
    rc, out, err = main("best", "metrics.acc", "--where", "hparams.lr>100", "--root", str(runs_dir))
    assert rc == 1 and out == "" and err.startswith("exprag-plus: no completed run has a finite value of 'metrics.acc'")


def test_a_run_that_did_not_complete_wins_only_when_asked(main, runs_dir: Path, sweep) -> None:
    """A failed run's numbers are no result: `best`, `progress` and `report` rank completed runs unless
    --all (or a --where on status) lets the others in; a failed run with the top value is then named."""
    with Experiment("crashed-high", metadata={"hparams": {"lr": 0.5}}, root=str(runs_dir)) as exp:
        exp.track({"step": 0, "metrics": {"acc": 9.0}})
        exp.end("failed", {"type": "Signal", "message": "killed by SIGKILL"})
    rc, out, _ = main("best", "metrics.acc", "--root", str(runs_dir))
    assert rc == 0 and sweep["lr0.1"].run_id[-8:] in out.splitlines()[1]
    assert "left out 2 that did not complete (2 failed; --all ranks them too)" in out
    for extra in (["--all"], ["--where", "status!=completed"]):
        rc, out, _ = main("best", "metrics.acc", *extra, "--root", str(runs_dir), "--json")
        assert j(out)["run"]["id"] == exp.run_id and j(out)["left_out"] == {}
    rc, out, err = main("best", "metrics.acc", "--where", "hparams.lr=0.5", "--root", str(runs_dir))
    assert rc == 1 and "1 run(s) that did not complete have one: add --all to rank them too" in err
    rc, out, _ = main("progress", "metrics.acc", "--root", str(runs_dir), "--json")
    d = j(out)
    assert d["best"]["id"] == sweep["lr0.1"].run_id and not d["runs"][-1]["improved"]
    assert d["runs"][-1]["value"] == 9.0 and d["runs"][-1]["best_so_far"] == pytest.approx(1.4)
    rc, out, _ = main("progress", "metrics.acc", "--all", "--root", str(runs_dir), "--json")
    assert j(out)["best"]["id"] == exp.run_id
    page = runs_dir / "r.html"
    rc, out, _ = main("report", "-o", str(page), "--root", str(runs_dir))
    assert rc == 0 and "&#9733; 9" not in page.read_text() and "&#9733; 1.3" in page.read_text()


def test_history_of_a_run_counting_epochs_shows_the_epoch(main, runs_dir: Path) -> None:
    """Trial 5: a script tracking `epoch` (no `step`) got a SEQ column and had to ask history twice."""
    with Experiment("epochs", root=str(runs_dir)) as exp:
        for e in range(1, 4):
            exp.track({"epoch": e, "val_loss": 1.0 / e})
    rc, out, _ = main("history", exp.run_id, "val_loss", "--root", str(runs_dir))
    assert rc == 0 and out.splitlines()[2].split() == ["EPOCH", "VALUE"] and out.splitlines()[3].split() == ["1", "1"]
    rc, out, _ = main("history", exp.run_id, "val_loss", "--root", str(runs_dir), "--json")
    assert [(p["epoch"], p["step"]) for p in j(out)["points"]] == [(1, None), (2, None), (3, None)]


def test_history(main, runs_dir: Path, sweep) -> None:
    ref = sweep["lr0.1"].run_id
    rc, out, err = main("history", ref, "metrics.acc", "--root", str(runs_dir))
    lines = out.splitlines()
    assert rc == 0 and err == ""
    assert lines[0] == f"metrics.acc in {ref[-8:]}: 11 points, last 1.3, min 0.5, max 1.4"
    assert lines[1] == "▁▂▃▃▄▅▆▆▇█▇" and lines[2].split() == ["STEP", "VALUE"] and len(lines) == 14
    rc, out, err = main("history", ref, "metrics.acc", "--max-points", "5", "--root", str(runs_dir), "--json")
    d = j(out)
    assert d["count"] == 11 and d["shown"] == 5 and d["sampled"] is True
    assert [p["step"] for p in d["points"]][0] == 0 and d["points"][-1]["step"] == 10
    assert 1.4 in [round(p["value"], 6) for p in d["points"]]  # the best point is kept
    assert "showing 5 of 11 points" in err
    rc, out, _ = main("history", ref, "metrics.acc", "--step", "3", "--root", str(runs_dir), "--json")
    assert [(p["step"], round(p["value"], 6)) for p in j(out)["points"]] == [(3, 0.8)]
    rc, out, err = main("history", ref, "metrics.acc", "--step", "99", "--root", str(runs_dir))
    assert rc == 1 and "no 'metrics.acc' point at step 99 (steps 0..10)" in err
    rc, out, _ = main("history", sweep["nan"].run_id, "metrics.loss", "--root", str(runs_dir), "--json")
    assert [p["value"] for p in j(out)["points"]] == [2.0, "NaN"]


def test_compare(main, runs_dir: Path, sweep) -> None:
    a, b = sweep["lr0.01"].run_id, sweep["nan"].run_id
    rc, out, _ = main("compare", a, b, "--root", str(runs_dir), "--json")
    d = j(out)
    assert rc == 0 and d["a"]["id"] == a and d["b"]["id"] == b
    assert d["metadata"] == [{"path": "hparams.bs", "a": 32, "b": 64, "only_in": None},
                             {"path": "hparams.lr", "a": 0.01, "b": 10.0, "only_in": None}]
    acc = next(m for m in d["metrics"] if m["path"] == "metrics.acc")
    assert acc["a"] == pytest.approx(0.58) and acc["b"] == 0.1 and acc["delta"] == pytest.approx(-0.48)
    loss = next(m for m in d["metrics"] if m["path"] == "metrics.loss")
    assert loss["b"] == "NaN" and loss["delta"] == "NaN"
    rc, out, _ = main("compare", a, b, "--root", str(runs_dir))
    assert "METADATA CHANGED" in out and "FINAL METRIC" in out
    assert [l.split() for l in out.splitlines() if l.startswith(("hparams.lr", "metrics.loss"))] == [
        ["hparams.lr", "0.01", "10"], ["metrics.loss", "0.1", "NaN", "NaN"]]


def test_real_process_entry_points(runs_dir: Path, sweep, tmp_path: Path) -> None:
    p = cli("runs", "--json", "--root", str(runs_dir))
    assert p.returncode == 0 and json.loads(p.stdout)["total"] == 4
    p = cli("show", "nope", "--root", str(runs_dir))
    assert p.returncode == 2 and p.stdout == "" and p.stderr.count("\n") == 1
    p = cli("runs", cwd=tmp_path, env={"EXPRAG_PLUS_DIR": str(runs_dir)})
    assert p.returncode == 0 and "sweep" in p.stdout


def test_corrupt_lines_warn_on_stderr_only(runs_dir: Path, sweep) -> None:
    path = Path(sweep["lr0.01"].path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3] + ["{broken\n"] + lines[3:]))
    p = cli("history", sweep["lr0.01"].run_id, "metrics.acc", "--json", "--root", str(runs_dir))
    assert p.returncode == 0 and json.loads(p.stdout)["count"] == 11
    assert p.stderr == f"exprag-plus: warning: {path}:4: skipped a corrupt line (not JSON: Expecting property name " \
                       "enclosed in double quotes at column 2)\n"


def test_where_orders_huge_ints_and_floats_exactly(main, runs_dir: Path) -> None:
    Experiment("huge", metadata={"n": 10 ** 400}, root=str(runs_dir)).close()
    Experiment("small", metadata={"n": 3}, root=str(runs_dir)).close()
    rc, out, err = main("runs", "--where", "n>2.5", "--root", str(runs_dir), "--json")
    assert rc == 0 and sorted(r["name"] for r in json.loads(out)["runs"]) == ["huge", "small"]
    rc, out, err = main("runs", "--where", "n>1e300", "--root", str(runs_dir), "--json")
    assert rc == 0 and [r["name"] for r in json.loads(out)["runs"]] == ["huge"]


def test_emit_json_indents_small_answers_and_keeps_large_ones_on_one_line(capsys: pytest.CaptureFixture) -> None:
    from exprag_plus import cli

    cli.emit_json({"a": [1, 2]})
    assert capsys.readouterr().out == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'
    big = {"runs": [{"id": f"{i:032x}", "metrics": {"loss": i / 7}} for i in range(5000)]}
    cli.emit_json(big)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out) == big


def test_where_equal_to_text_on_a_number_path_or_an_unknown_status_is_an_error(main, tmp_path: Path) -> None:
    """Trial 8: `--where 'args.lr=0.1 and args.seed=2'`, `args.lr=abc` and `status=crash` matched nothing with
    exit 0, while `args.lr>abc` was an error. Text cannot equal a path that holds only numbers."""
    root = tmp_path / "runs"
    for lr in (0.1, 0.2):
        with Experiment("a", metadata={"args": {"lr": lr}}, root=str(root), snapshot=False) as exp:
            exp.track({"loss": lr})
    for expr, words in (("args.lr=0.1 and args.seed=2", "args.lr holds numbers, and '0.1 and args.seed=2' is not one"),
                        ("args.lr!=abc", "args.lr holds numbers, and 'abc' is not one"),
                        ("loss=abc", "loss holds numbers, and 'abc' is not one"),
                        ("status=crash", "a status is one of completed, failed, interrupted, running, crashed")):
        rc, out, err = main("runs", "--where", expr, "--root", str(root))
        assert rc == 2 and err.strip().endswith(f"bad --where {expr!r}: {words}"), err
    for expr, n in (("args.lr=0.1", 1), ("loss!=NaN", 2), ("status=crashed", 0), ("tag=y", 0)):
        rc, out, err = main("runs", "--where", expr, "--root", str(root), "--json")
        assert rc == 0 and j(out)["matched"] == n, (expr, err)


def test_an_unknown_option_names_the_nearest_and_the_commands_help(main, tmp_path: Path) -> None:
    """Trial 8: `best val_loss --minimize` said only "(see `exprag-plus --help`)", the top-level help."""
    rc, out, err = main("best", "loss", "--minimize", "--root", str(tmp_path))
    assert rc == 2 and err.strip() == ("exprag-plus best: error: unrecognized arguments: --minimize; did you mean "
                                       "--min? (see `exprag-plus best --help`)")
    rc, out, err = main("runs", "extra", "--root", str(tmp_path))
    assert rc == 2 and err.strip().endswith("unrecognized arguments: extra (see `exprag-plus runs --help`)")


def test_control_characters_in_names_and_notes_never_reach_the_terminal(main, tmp_path: Path) -> None:
    """Red team (trial 10): a run name or note text with escape sequences (from a pulled file) cleared or
    retitled the terminal through `runs` and `notes`."""
    root = tmp_path / "runs"
    with Experiment("evil\x1b[2J\x1b]0;pwned\x07", root=str(root), snapshot=False) as exp:
        exp.track({"loss": 1.0})
        exp.note("hidden\x1b[8m text")
    for args in (["runs"], ["notes"]):
        rc, out, err = main(*args, "--root", str(root))
        assert rc == 0 and "\x1b" not in out and "\x07" not in out, (args, out)
    assert "evil\\x1b[2J" in main("runs", "--root", str(root))[1]


def test_history_max_points_below_four_is_refused(main, tmp_path: Path) -> None:
    """Trial 8: `--max-points 3` dropped the minimum while stderr said "first, last, min and max kept"."""
    root = tmp_path / "runs"
    with Experiment("a", root=str(root), snapshot=False) as exp:
        for i, v in enumerate([5.0, 4.0, 1.0, 3.0, 2.0, 4.5]):
            exp.track({"step": i, "loss": v})
    rc, out, err = main("history", "latest", "loss", "--max-points", "3", "--root", str(root))
    assert rc == 2 and err.strip().endswith("max points 3: give 0 (every point) or at least 4 (the first, last, "
                                            "min and max points are always kept)")
    rc, out, err = main("history", "latest", "loss", "--max-points", "4", "--root", str(root), "--json")
    assert rc == 0 and {p["value"] for p in j(out)["points"]} >= {5.0, 1.0, 4.5}


def test_json_errors_are_a_json_document_on_stdout_too(main, tmp_path: Path) -> None:
    """An agent's loop parses stdout: with --json an error left it empty (json.loads('') failed in the
    loop, trial 6). stderr keeps its one line; stdout holds {"error": {kind, message, exit_code}}."""
    root = tmp_path / "runs"
    with Experiment("a", root=str(root), snapshot=False) as exp:
        exp.track({"loss": 1.0})
    rc, out, err = main("best", "los", "--root", str(root), "--json")
    assert rc == 2 and j(out) == {"error": {"kind": "usage", "message": err.split(": error: ", 1)[1].strip(),
                                            "exit_code": 2}}
    rc, out, err = main("best", "loss", "--where", "loss>5", "--root", str(root), "--json")
    assert rc == 1 and j(out)["error"]["kind"] == "no_result" and j(out)["error"]["message"] in err
    rc, out, err = main("show", "abcdef99", "--root", str(root), "--json")
    assert rc == 2 and "no run matches 'abcdef99'" in j(out)["error"]["message"]
    rc, out, err = main("best", "los", "--root", str(root))
    assert rc == 2 and out == ""  # without --json, stdout stays empty
    rc, out, err = main("run", "--json", "--timeout", "abc", "--", "true")  # refused while parsing (trial 11)
    assert rc == 2 and "invalid seconds 'abc'" in j(out)["error"]["message"]
    rc, out, err = main("runs", "--limit", "x", "--root", str(root))
    assert rc == 2 and out == ""


def test_best_warns_when_the_winner_diverged(main, tmp_path: Path) -> None:
    """Trial 7: lr=0.3 had the lowest loss before it went NaN, won `best --min`, and the line "0 with a
    non-finite value" read as "no run diverged" (it counts runs whose ranked statistic is non-finite)."""
    root = tmp_path / "runs"
    for name, losses in (("steady", [1.0, 0.5, 0.2]), ("diverged", [1.0, 0.1, float("nan")])):
        with Experiment(name, root=str(root), snapshot=False) as exp:
            for i, v in enumerate(losses):
                exp.track({"step": i, "loss": v})
    rc, out, _ = main("best", "loss", "--min", "--root", str(root))
    assert rc == 0 and out.splitlines()[1].split()[1] == "'diverged'"
    assert "  ranked 2 run(s); 0 with a non-finite min, 0 without the metric" in out.splitlines()
    assert ("  warning: the winner's loss has 1 non-finite value(s), last NaN: it may have diverged; "
            "--where 'loss!=NaN' leaves such runs out, --final ranks by the last value") in out.splitlines()
    rc, out, _ = main("best", "loss", "--min", "--where", "loss!=NaN", "--root", str(root), "--json")
    assert j(out)["run"]["name"] == "steady" and j(out)["warning"] is None


def test_best_says_when_runs_tie_and_which_wins(main, tmp_path: Path) -> None:
    root = tmp_path / "runs"
    made = []
    for name, v in (("a", 0.5), ("b", 0.0), ("c", 0.0), ("d", 0.0)):
        with Experiment(name, root=str(root), snapshot=False) as exp:
            exp.track({"val_loss": v})
        made.append(exp.run_id)
    rc, out, _ = main("best", "val_loss", "--min", "--root", str(root), "--json")
    d = j(out)
    assert d["run"]["id"] == made[1] and d["tied"] == 2 and [t["id"] for t in d["tied_with"]] == made[2:]
    rc, out, _ = main("best", "val_loss", "--min", "--root", str(root))
    assert (f"  tied: 2 other run(s) have the same value ({made[2][-8:]}, {made[3][-8:]}); "
            "the earliest-started is shown") in out.splitlines()
    rc, out, _ = main("best", "val_loss", "--root", str(root), "--json")
    assert j(out)["tied"] == 0 and "tied:" not in main("best", "val_loss", "--root", str(root))[1]
    os.environ[ENV_REPLAY_OF] = made[1]  # trial 9: a replay tying with its original is a reproduction, say so
    try:
        with Experiment("b again", root=str(root), snapshot=False) as exp:
            exp.track({"val_loss": 0.0})
    finally:
        del os.environ[ENV_REPLAY_OF]
    rc, out, _ = main("best", "val_loss", "--min", "--root", str(root))
    assert (f"  tied: 3 other run(s) have the same value ({made[2][-8:]}, {made[3][-8:]}, {exp.run_id[-8:]} "
            "(a replay of it: reproduced)); the earliest-started is shown") in out.splitlines()
