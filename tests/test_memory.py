"""The research memory through the real CLI: notes and tags after the fact, text values as data, step
counters as axes, the runs table's columns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import pytest

from exprag_plus import Experiment, load_run, load_runs

from conftest import cli, read_lines


def j(out: str):
    return json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON literal {c}"))


@pytest.fixture
def loop(runs_dir: Path) -> List[str]:
    """Three runs of a loop: the middle one carries a hypothesis note written during the run."""
    made = []
    for i, lr in enumerate((0.1, 0.03, 0.01)):
        with Experiment("loop", metadata={"lr": lr}, root=str(runs_dir)) as exp:
            for step in range(4):
                if i == 1 and step == 2:
                    exp.note("smaller lr should help", kind="hypothesis")
                exp.track({"step": step, "epoch": step // 2, "zeta": step, "train_loss": 1.0 / (step + 1 + i),
                           "val_loss": 2.0 / (step + 1 + i), "decision": "kept" if i else "discarded",
                           "ok": i != 0})
        made.append(exp.run_id)
    return made


def run_cli(runs_dir: Path, *args: str):
    return cli(*args, "--root", str(runs_dir))


def test_note_and_tag_after_the_fact_through_the_cli(runs_dir: Path, loop: List[str]) -> None:
    first, middle, last = loop
    p = run_cli(runs_dir, "note", middle[-8:], "lr 0.03 beat 0.1; keep it", "--kind", "decision", "--json")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    rec = j(p.stdout)
    assert (rec["type"], rec["text"], rec["kind"], rec["run_id"]) == ("note", "lr 0.03 beat 0.1; keep it", "decision", middle)
    lines = read_lines(runs_dir / f"{middle}.jsonl")
    assert lines[-1] == rec and rec["seq"] == lines[-2]["seq"] + 1  # appended after run_end, seq continuing
    assert run_cli(runs_dir, "tag", middle, "keep", "best").returncode == 0
    assert run_cli(runs_dir, "tag", middle, "best", "--remove").returncode == 0
    assert run_cli(runs_dir, "tag", first, "discard").returncode == 0
    run = load_run(middle, root=str(runs_dir))
    assert run.tags == ["keep"]
    assert [(n["kind"], n["text"]) for n in run.notes] == [("hypothesis", "smaller lr should help"),
                                                           ("decision", "lr 0.03 beat 0.1; keep it")]
    # show lists notes in order with time and kind
    out = run_cli(runs_dir, "show", middle).stdout
    assert "tags      keep" in out
    hyp, dec = out.index("hypothesis: smaller lr should help"), out.index("decision: lr 0.03 beat 0.1; keep it")
    assert hyp < dec and "notes (2, oldest first)" in out
    shown = j(run_cli(runs_dir, "show", middle, "--json").stdout)
    assert [n["kind"] for n in shown["notes"]] == ["hypothesis", "decision"] and shown["tags"] == ["keep"]
    # runs: tags and the latest note; --where tag= / note~
    out = run_cli(runs_dir, "runs").stdout
    header = out.splitlines()[0]
    assert "TAGS" in header and "LATEST NOTE" in header
    row = next(l for l in out.splitlines() if l.startswith(middle[-8:]))
    assert "keep" in row and "lr 0.03 beat 0.1; keep it" in row
    sel = j(run_cli(runs_dir, "runs", "--where", "tag=keep", "--json").stdout)
    assert [r["id"] for r in sel["runs"]] == [middle] and sel["runs"][0]["latest_note"]["kind"] == "decision"
    sel = j(run_cli(runs_dir, "runs", "--where", "note~smaller lr", "--json").stdout)
    assert [r["id"] for r in sel["runs"]] == [middle]
    sel = j(run_cli(runs_dir, "runs", "--where", "tag!=keep", "--json").stdout)
    assert sorted(r["id"] for r in sel["runs"]) == sorted([first, last])
    assert [r["id"] for r in j(run_cli(runs_dir, "runs", "--where", "tag=best", "--json").stdout)["runs"]] == []


def test_note_and_tag_errors_are_one_line_exit_2(runs_dir: Path, loop: List[str]) -> None:
    before = {p: p.read_bytes() for p in runs_dir.glob("*.jsonl")}
    for args, words in [(("note", "abcdef99", "text"), "no run matches 'abcdef99'"),
                        (("note", "latest", "   "), "empty note"),
                        (("note", "latest", "x", "--kind", "two words"), "bad note kind"),
                        (("tag", "latest", "a b"), "bad tag"),
                        (("tag", "../../etc/passwd.jsonl", "keep"), "not a run file inside the runs folder"),
                        (("runs", "--where", "tag>keep"), "tag takes = != or ~")]:
        p = run_cli(runs_dir, *args)
        assert p.returncode == 2 and words in p.stderr and p.stderr.count("\n") == 1, (args, p.stderr)
        assert "Traceback" not in p.stderr
    assert {p: p.read_bytes() for p in runs_dir.glob("*.jsonl")} == before


def test_listing_finds_notes_anywhere_in_a_big_file(runs_dir: Path) -> None:
    """A note written early in a run whose file is far bigger than the tail a listing reads."""
    with Experiment("big", root=str(runs_dir)) as exp:
        exp.note("early idea", kind="hypothesis")
        exp.tag("early")
        for step in range(6000):
            exp.track({"step": step, "loss": 1.0 / (step + 1), "pad": "x" * 40})
        exp.note("mid-run observation", kind="observation")
        for step in range(6000, 9000):
            exp.track({"step": step, "loss": 1.0 / (step + 1), "pad": "x" * 40})
    assert exp.path and Path(exp.path).stat().st_size > 400_000
    (listed,) = load_runs(str(runs_dir))
    whole = load_run("latest", root=str(runs_dir))
    assert listed._records is None  # the listing did not read every line
    assert listed.notes == whole.notes and [n["text"] for n in listed.notes] == ["early idea", "mid-run observation"]
    assert listed.tags == whole.tags == ["early"]
    sel = j(run_cli(runs_dir, "runs", "--where", "note~mid-run", "--json").stdout)
    assert sel["matched"] == 1 and sel["runs"][0]["tags"] == ["early"]


def test_text_and_boolean_values_are_data(runs_dir: Path, loop: List[str]) -> None:
    first, middle, last = loop
    end = read_lines(runs_dir / f"{middle}.jsonl")[-1]
    assert end["type"] == "run_end"
    assert end["summary"]["decision"] == {"last": "kept", "count": 4, "last_step": 3}
    assert end["summary"]["ok"]["last"] is True and "min" not in end["summary"]["ok"]
    shown = run_cli(runs_dir, "show", middle).stdout
    assert any(l.split()[:2] == ["decision", "kept"] for l in shown.splitlines())
    keys = j(run_cli(runs_dir, "keys", "--json").stdout)
    assert keys["metrics"]["decision"] == {"runs": 3, "kind": "text", "values": ["discarded", "kept"]}
    assert "TEXT PATH" in run_cli(runs_dir, "keys").stdout
    cmp = j(run_cli(runs_dir, "compare", first, middle, "--json").stdout)
    assert {"path": "decision", "a": "discarded", "b": "kept", "delta": None} in cmp["metrics"]
    sel = j(run_cli(runs_dir, "runs", "--where", "decision=kept", "--json").stdout)
    assert sorted(r["id"] for r in sel["runs"]) == sorted([middle, last])
    assert sel["runs"][0]["metrics"]["decision"] == "kept"
    sel = j(run_cli(runs_dir, "runs", "--where", "ok=false", "--json").stdout)
    assert [r["id"] for r in sel["runs"]] == [first]
    for cmd in (("best", "decision"), ("plot", "decision", "-o", str(runs_dir / "d.svg"))):
        p = run_cli(runs_dir, *cmd)
        assert p.returncode == 2 and "holds text or booleans" in p.stderr and "--where 'decision=kept'" in p.stderr
    # a run without run_end (crashed) computes the same from its tracks
    other = runs_dir.parent / "other"
    other.mkdir()
    (other / f"{middle}.jsonl").write_text("".join(l + "\n" for l in (runs_dir / f"{middle}.jsonl").read_text().splitlines()[:-1]))
    (crashed,) = load_runs(str(other))
    assert crashed.end is None and crashed.summary["decision"] == end["summary"]["decision"]


def test_step_counters_are_axes_not_metrics(runs_dir: Path, loop: List[str]) -> None:
    keys = j(run_cli(runs_dir, "keys", "--json").stdout)
    assert set(keys["axes"]) == {"step", "epoch"} and not {"step", "epoch"} & set(keys["metrics"])
    assert "zeta" in keys["metrics"]
    for axis in ("step", "epoch", "step:max"):
        p = run_cli(runs_dir, "best", axis)
        assert p.returncode == 2 and "is an axis" in p.stderr, p.stderr
    header = run_cli(runs_dir, "runs").stdout.splitlines()[0].split()
    assert "step" not in header and "epoch" not in header
    cmp = j(run_cli(runs_dir, "compare", "latest~1", "latest", "--json").stdout)
    assert "step" not in [m["path"] for m in cmp["metrics"]] and [m["path"] for m in cmp["axes"]] == ["epoch", "step"]
    hist = j(run_cli(runs_dir, "history", "latest", "val_loss", "--json").stdout)
    assert [p["step"] for p in hist["points"]] == [0, 1, 2, 3]


def test_runs_metric_columns_and_n_of_m(runs_dir: Path, loop: List[str]) -> None:
    header = run_cli(runs_dir, "runs").stdout.splitlines()[0].split()
    # not alphabetical: the loss names come first (val before train), zeta is not crowded in before them
    assert header[6:8] == ["val_loss", "train_loss"]
    p = run_cli(runs_dir, "runs", "--metric", "zeta", "decision", "--limit", "2")
    lines = p.stdout.splitlines()
    assert p.returncode == 0 and lines[0].split()[6:8] == ["zeta", "decision"]
    assert lines[-1] == "2 of 3 runs (--limit 0 for all)"
    assert run_cli(runs_dir, "runs", "--columns", "ok").stdout.splitlines()[0].split()[6:8] == ["ok", "LATEST"]
    p = run_cli(runs_dir, "runs", "--metric", "val_los")
    assert p.returncode == 2 and "val_loss" in p.stderr


def test_a_wrapped_command_that_succeeded_shows_no_error(runs_dir: Path) -> None:
    """run_end's `"error": null` (the run wrapper writes it) is no error: show printed `error null`."""
    p = cli("run", "--root", str(runs_dir), "--name", "ok", "--", "true")
    assert p.returncode == 0, p.stderr
    out = run_cli(runs_dir, "show", "latest").stdout
    assert "error" not in out.split("records")[0] and j(run_cli(runs_dir, "show", "latest", "--json").stdout)["error"] is None


def test_notes_lists_every_note_across_runs_oldest_first(runs_dir: Path, loop: List[str]) -> None:
    first, middle, last = loop
    for run, text, kind in ((first, "lr 0.1 diverged", "observation"), (last, "keep 0.01\nit beat 0.03", "decision")):
        assert run_cli(runs_dir, "note", run, text, "--kind", kind).returncode == 0
    p = run_cli(runs_dir, "notes")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    lines = p.stdout.splitlines()
    assert [l for l in lines if not l.startswith("  ")] == [
        l for l in lines if l.endswith(("[hypothesis]", "[observation]", "[decision]"))]
    assert [l for l in lines if l.startswith("  ")] == ["  smaller lr should help", "  lr 0.1 diverged",
                                                        "  keep 0.01", "  it beat 0.03"]
    assert lines[0].split("  ")[1:] == [middle[-8:], "'loop' (completed)", "[hypothesis]"]
    res = j(run_cli(runs_dir, "notes", "--kind", "decision", "--json").stdout)
    assert (res["runs"], res["matched"], res["shown"]) == (3, 1, 1)
    assert res["notes"][0]["run"]["id"] == last and res["notes"][0]["text"] == "keep 0.01\nit beat 0.03"
    p = run_cli(runs_dir, "notes", "--limit", "1", "--where", "lr<0.05", "--json")
    assert [n["text"] for n in j(p.stdout)["notes"]] == ["keep 0.01\nit beat 0.03"]
    assert p.stderr == "exprag-plus: showing the latest 1 of 2 notes (--limit 0 for all)\n"
    p = run_cli(runs_dir, "notes", "--where", "lr>1")
    assert p.returncode == 0 and p.stdout == "no notes in 0 run(s) (`exprag-plus note RUN TEXT` adds one)\n"


def test_a_note_whose_text_is_not_text_is_skipped_not_a_crash(main, tmp_path: Path) -> None:
    """Red team (trial 10): a note record with an object as its text (a file pulled from anywhere) made
    report and progress -o fail with an internal TypeError."""
    root = tmp_path / "runs"
    for v in (1.0, 0.5):
        with Experiment("r", root=str(root), snapshot=False) as exp:
            exp.track({"loss": v})
    with open(exp.path, "a") as f:
        f.write(json.dumps({"type": "note", "run_id": exp.run_id, "seq": 9, "time": "2026-01-01T00:00:00Z",
                            "elapsed_ms": 1, "text": {"a": 1}}) + "\n")
    for args in (["report", "-o", str(tmp_path / "r.html")], ["progress", "loss", "--min", "-o", str(tmp_path / "p.svg")],
                 ["notes"]):
        rc, out, err = main(*args, "--root", str(root))
        assert rc == 0 and "internal error" not in err, (args, err)
