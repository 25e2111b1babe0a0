"""What the writer puts in a run file can always be read back: strict UTF-8, bounded depth, bounded ints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path


from exprag_plus import Experiment, load_run, records

from conftest import ROOT, cli


def strict_lines(path: Path) -> list:
    """Every line of a run file read as a strict UTF-8 reader would: any bad byte fails the whole file."""
    text = Path(path).read_bytes().decode("utf-8")  # no errors= on purpose
    return [json.loads(line) for line in text.splitlines()]


def depth(x: object) -> int:
    if isinstance(x, dict):
        return 1 + max([depth(v) for v in x.values()] + [0])
    if isinstance(x, list):
        return 1 + max([depth(v) for v in x] + [0])
    return 0


def test_non_utf8_cwd_argv_metadata_and_values_keep_the_file_strict_utf8(tmp_path: Path) -> None:
    odd = os.fsencode(tmp_path) + b"/caf\xe9-\xff"  # a Latin-1 folder name, as an old archive unpacks it
    os.mkdir(odd)
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        from exprag_plus import Experiment
        arg = sys.argv[1]
        with Experiment("odd bytes", metadata={"data": arg, arg: 1}) as exp:
            exp.track({"path": os.getcwd(), "loss": 0.5}, note=arg)
            exp.track({arg: 0.25})
    """))
    runs = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EXPRAG_PLUS_DIR": str(runs)}
    subprocess.run([sys.executable, str(script), b"--data=\xff\xfe.bin"], cwd=odd, env=env, check=True,
                   capture_output=True)
    path = next(runs.glob("*.jsonl"))
    start, t1, t2, end = strict_lines(path)
    assert start["process"]["cwd"].endswith("/caf\\xe9-\\xff")  # the bytes, as escaped text
    assert start["process"]["argv"][-1] == "--data=\\xff\\xfe.bin"
    assert start["metadata"] == {"data": "--data=\\xff\\xfe.bin", "--data=\\xff\\xfe.bin": 1}
    assert t1["value"]["path"].endswith("/caf\\xe9-\\xff") and t1["note"] == "--data=\\xff\\xfe.bin"
    assert end["summary"][records.escape_key("--data=\\xff\\xfe.bin")]["last"] == 0.25
    for args in (["runs", "--json"], ["show", "latest", "--json"], ["keys", "--json"], ["show", "latest"]):
        p = cli(*args, "--root", str(runs), env={"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"})
        assert p.returncode == 0 and "Traceback" not in p.stderr, (args, p.stderr)
    assert "caf\\xe9-\\xff" in json.loads(cli("show", "latest", "--json", "--root", str(runs)).stdout)["process"]["cwd"]


def test_escape_surrogates_names_each_byte() -> None:
    raw = b"a\xff\xe9b".decode("utf-8", "surrogateescape")
    assert records.escape_surrogates(raw) == "a\\xff\\xe9b"
    assert records.escape_surrogates("x\ud800y") == "x\\ud800y"  # a surrogate that is no byte
    assert records.escape_surrogates("plain é ✓") == "plain é ✓"
    assert records.encode({raw: [raw]}).encode("utf-8") == b'{"a\\\\xff\\\\xe9b":["a\\\\xff\\\\xe9b"]}'


def nested(levels: int) -> list:
    value: list = []
    cur = value
    for _ in range(levels - 1):
        inner: list = []
        cur.append(inner)
        cur = inner
    return value


def test_a_deeply_nested_value_is_flattened_at_write_time_with_one_warning(runs_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", records.OddValueWarning)  # once per process: see the test below
        with Experiment("deep", metadata={"cfg": nested(990)}, root=str(runs_dir), snapshot=False) as exp:
            exp.track({"tree": nested(990), "loss": 0.5})
            exp.track({"tree": {"a": nested(500)}, "loss": 0.4})
            exp.track({"ok": nested(90), "loss": 0.3})  # deep but readable: kept as it is
    lines = strict_lines(exp.path)
    assert [r["type"] for r in lines] == ["run_start", "track", "track", "track", "run_end"]
    assert all(depth(r) <= records.MAX_DEPTH + 2 for r in lines)  # the record and its field hold the value
    assert lines[1]["value"]["loss"] == 0.5 and "__repr__" in json.dumps(lines[1]["value"]["tree"])
    assert lines[3]["value"]["ok"] == nested(90)
    run = load_run(exp.path, root=str(runs_dir))  # the reader sees every record, deep ones included
    assert len(run.tracks) == 3 and run.summary["loss"]["count"] == 3
    assert depth(run.metadata) <= records.MAX_DEPTH


def test_deep_values_warn_once(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        from exprag_plus import Experiment
        def nested(n):
            v = []
            for _ in range(n): v = [v]
            return v
        with Experiment("deep", root="runs", snapshot=False) as exp:
            for i in range(5):
                exp.track({"tree": nested(990), "loss": i})
    """)], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr.count("nested deeper than 100 levels") == 1, p.stderr


def test_an_int_over_4300_digits_is_stored_as_text_not_dropped(runs_dir: Path) -> None:
    big = 7 * 10 ** 5000 + 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", records.OddValueWarning)
        with Experiment("big", metadata={"seed": big}, root=str(runs_dir), snapshot=False) as exp:
            exp.track({"n": big, "loss": 0.5})
            exp.track({"n": -big, "loss": 0.25})
            exp.track({"n": 10 ** 4299, "loss": 0.125})  # 4,300 digits: still a number
    lines = strict_lines(exp.path)
    assert [r["type"] for r in lines] == ["run_start", "track", "track", "track", "run_end"]
    digits = "7" + "0" * 4999 + "3"
    assert lines[0]["metadata"]["seed"] == {"__int__": digits}
    assert lines[1]["value"]["n"] == {"__int__": digits} and lines[2]["value"]["n"] == {"__int__": "-" + digits}
    assert lines[3]["value"]["n"] == 10 ** 4299
    assert lines[-1]["summary"]["loss"]["count"] == 3
    assert load_run(exp.path, root=str(runs_dir)).summary["loss"]["last"] == 0.125


def test_dumps_output_always_encodes_and_loads() -> None:
    for value in ({"k": "\udcff"}, nested(150), {"x": 10 ** 6000}, [[1]] * 300, {"s": "[" * 500}):
        text = records.encode(value)
        assert json.loads(text.encode("utf-8")) is not None and depth(json.loads(text)) <= records.MAX_DEPTH
    assert records.dumps({"s": "[" * 500}) == json.dumps({"s": "[" * 500}, separators=(",", ":"))  # brackets in text are not depth
