"""Plots and the HTML report: parsed back (ElementTree, html.parser), bounded in size, and seen by Chromium."""

from __future__ import annotations

import html.parser
import json
import math
import os
import re
import stat
import threading
import shutil
import struct
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from exprag_plus import Experiment, load_runs
from conftest import ROOT
from exprag_plus import plot as P
from exprag_plus import report as R


NS = "{http://www.w3.org/2000/svg}"
NAN, INF = float("nan"), float("inf")


# --- helpers ---------------------------------------------------------------------------------------


def parse_svg(text: str) -> ET.Element:
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == f"{NS}svg"
    return root


def series_paths(root: ET.Element) -> List[List[List[Tuple[float, float]]]]:
    """Per series path: its subpaths (segments), each a list of points."""
    out = []
    for el in root.iter(f"{NS}path"):
        if el.get("class") != "series":
            continue
        segs = []
        for sub in re.findall(r"M([^M]*)", el.get("d", "")):
            pts = [tuple(map(float, p.split(","))) for p in sub.replace("h0", "").split()]
            segs.append(pts)
        out.append(segs)
    return out


def texts(root: ET.Element, cls: str = "") -> List[str]:
    scope = [g for g in root.iter() if g.get("class") == cls] if cls else [root]
    return ["".join(t.itertext()) for g in scope for t in g.iter(f"{NS}text")]


def make_runs(runs_dir: Path) -> Dict[str, Experiment]:
    made = {}
    for lr in (0.1, 0.3):
        with Experiment(f"sweep lr={lr}", metadata={"hparams": {"lr": lr}}, root=str(runs_dir)) as exp:
            for step in range(50):
                exp.track({"step": step * 10, "metrics": {"loss": 2.0 * math.exp(-step * lr) + 0.01,
                                                          "acc": 1 - math.exp(-step * lr), "shift": step - 25.0}})
        made[f"lr{lr}"] = exp
    with Experiment("<script>alert(1)</script>", metadata={"note": "<img src=x onerror=alert(2)>"},
                    root=str(runs_dir)) as exp:
        for step in range(20):
            exp.track({"step": step, "metrics": {"loss": math.nan if 8 <= step < 12 else 1.0 / (step + 1),
                                                 "acc": 0.5}})
    made["evil"] = exp
    return made


# --- ticks and labels ------------------------------------------------------------------------------


@pytest.mark.parametrize("lo, hi, n, labels", [
    (0, 1, 6, ["0", "0.2", "0.4", "0.6", "0.8", "1"]),
    (0, 999_999, 6, ["0", "200k", "400k", "600k", "800k"]),
    (1.2e6, 1.9e6, 4, ["1.2M", "1.4M", "1.6M", "1.8M"]),
    (0, 3e-5, 3, ["0", "1e-5", "2e-5", "3e-5"]),
    (0.04, 0.85, 4, ["0.2", "0.4", "0.6", "0.8"]),
    (1196, 1284, 4, ["1.2k", "1.22k", "1.24k", "1.26k", "1.28k"]),
    (-2, 7, 5, ["-2", "0", "2", "4", "6"]),
])
def test_nice_ticks_are_1_2_5_with_compact_labels(lo: float, hi: float, n: int, labels: List[str]) -> None:
    ticks = P.nice_ticks(lo, hi, n)
    assert P.tick_labels(ticks) == labels
    steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:])}
    assert len(steps) == 1 and f"{steps.pop():e}"[0] in "125"


def test_log_ticks_at_powers_of_ten() -> None:
    ticks = P.log_ticks(3e-7, 2.5)
    assert ticks == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0]
    assert P.tick_labels(ticks, log=True) == ["1e-6", "1e-5", "1e-4", "0.001", "0.01", "0.1", "1"]
    assert P.tick_labels(P.log_ticks(1, 1e12), log=True)[-1] == "1T"
    assert P.log_ticks(2, 30) == [2, 5, 10, 20]  # narrow range: 1-2-5 between the powers
    labels = P.tick_labels(P.log_ticks(0.3, 0.35), log=True)
    assert len(set(labels)) == len(labels) >= 2


# --- the pure drawing ------------------------------------------------------------------------------


def test_a_million_points_draw_a_bounded_small_svg_with_gaps() -> None:
    n = 1_000_000
    xs = list(range(n))
    ys = [1.0 + math.sin(i / 5000.0) + (i % 7) * 0.01 for i in range(n)]
    for i in range(400_000, 410_000):
        ys[i] = NAN
    ys[700_000] = INF
    t = time.perf_counter()
    d = P.draw([P.Series("big run", xs, ys)], title="metrics.loss", x_label="step", y_label="metrics.loss")
    elapsed = time.perf_counter() - t
    root = parse_svg(d.svg)
    (segs,) = series_paths(root)
    drawn = sum(len(s) for s in segs)
    assert drawn == d.points_drawn and d.series[0]["points"] == n and d.series[0]["nonfinite"] == 10_001
    assert drawn <= 4 * 900 and len(d.svg.encode()) < 200_000
    assert len(segs) == 3  # broken at the NaN block and at the lone Infinity
    xmax_before = max(x for x, _ in segs[0])
    assert all(x > xmax_before for x, _ in segs[1])
    marks = [p for p in root.iter(f"{NS}path") if p.get("class") == "nonfinite"]
    assert len(marks) == 1 and marks[0].get("d").count("M") >= 2
    assert "10k NaN/Inf" in " ".join(texts(root, "legend"))
    assert elapsed < 10


def test_reduction_keeps_extremes_in_order_and_bounds_unsorted_x() -> None:
    xs = list(range(1000))
    ys = [0.0] * 1000
    ys[500], ys[510] = 9.0, -9.0
    keep = P.reduce_points([float(x) for x in xs], ys, 0.0, 999.0, 10)
    picked = [ys[i] for i in keep if i is not None]
    assert picked.index(9.0) < picked.index(-9.0) and keep == sorted(keep)
    # x going back and forth (another metric as x) is cut in index chunks: still bounded
    wild = [float((i * 7919) % 1000) for i in range(100_000)]
    keep = P.reduce_points(wild, [float(i) for i in range(100_000)], 0.0, 999.0, 50)
    assert len(keep) <= 2 * 50 and keep == sorted(keep)


def test_gaps_lone_points_and_segments() -> None:
    d = P.draw([P.Series("s", [0, 1, 2, 3, 4, 5, 6, 7], [1, 2, NAN, 3, None, 4, INF, 5])])
    root = parse_svg(d.svg)
    (segs,) = series_paths(root)
    assert [len(s) for s in segs] == [2, 1, 1, 1]
    assert "h0" in root.find(f"{NS}path").get("d")  # a lone point is a dot (round cap on a zero-length line)
    assert d.series[0]["nonfinite"] == 3
    empty = P.draw([P.Series("none", [0, 1], [NAN, NAN])])
    assert empty.points_drawn == 0 and "no finite values" in " ".join(texts(parse_svg(empty.svg)))


def test_log_axis_leaves_non_positive_values_out() -> None:
    ys = [10.0 ** -k for k in range(7)] + [0.0, -1.0, 1e-6]
    d = P.draw([P.Series("decay", list(range(len(ys))), ys)], log=True, y_label="loss")
    root = parse_svg(d.svg)
    assert d.series[0]["nonpositive"] == 2 and d.series[0]["nonfinite"] == 0
    assert [len(s) for s in series_paths(root)[0]] == [7, 1]
    ticks = texts(root, "ticks")
    assert {"1e-6", "1e-5", "1e-4", "0.001", "0.01", "0.1", "1"} <= set(ticks)
    assert "loss (log)" in texts(root)


def test_legend_escaping_and_palette() -> None:
    lines = [(f"run {k} <b>&\"'", [0, 1], [k, k + 1]) for k in range(12)]
    text = P.svg_lines(lines, title="a < b", standalone=True)
    assert isinstance(text, str) and text._repr_svg_() == text
    root = parse_svg(text)
    legend = texts(root, "legend")
    assert legend[0] == "run 0 <b>&\"'" and len(legend) == 12
    strokes = [p.get("stroke") for p in root.iter(f"{NS}path") if p.get("class") == "series"]
    assert strokes[:10] == list(P.PALETTE) and strokes[10] == P.PALETTE[0]
    dashed = [p.get("stroke-dasharray") for p in root.iter(f"{NS}path") if p.get("class") == "series"]
    assert dashed[0] is None and dashed[10]  # the second round of colours is dashed
    inline = P.svg_lines(lines[:1], standalone=False)
    assert "http" not in inline and inline.startswith("<svg ")
    # the legend sits right of the plot area: it never covers a line
    frame = next(r for r in root.iter(f"{NS}rect") if r.get("stroke"))
    right = float(frame.get("x")) + float(frame.get("width"))
    assert all(float(t.get("x")) > right for g in root.iter() if g.get("class") == "legend"
               for t in g.iter(f"{NS}text"))


def test_svg_from_run_objects(runs_dir: Path) -> None:
    made = make_runs(runs_dir)
    runs = load_runs(str(runs_dir))
    root = parse_svg(P.svg(runs, "metrics.loss", log=True))
    legend = texts(root, "legend")
    assert legend[0] == f"{made['lr0.1'].run_id[-8:]} sweep lr=0.1"
    assert legend[2].startswith(made["evil"].run_id[-8:] + " <script>") and "4 NaN/Inf" in legend[2]
    assert "step" in texts(root) and "metrics.loss (log)" in texts(root)
    one = P.svg(runs[0], "metrics.acc", x="elapsed", standalone=False)
    assert "elapsed (s)" in one and "<?xml" not in one
    s = P.run_series(runs[0], "metrics.loss", x="metrics.acc")
    assert s.x_kind == "metrics.acc" and len(s.xs) == 50


# --- the CLI: plot --------------------------------------------------------------------------------


def test_plot_cli_default_name_json_and_replace(main, runs_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    made = make_runs(runs_dir)
    monkeypatch.chdir(tmp_path)
    rc, out, err = main("plot", "metrics.loss", "--root", str(runs_dir), "--json")
    data = json.loads(out)
    assert rc == 0 and err == "" and data["path"] == str(tmp_path / "metrics.loss.svg")
    assert [r["short_id"] for r in data["runs"]] == [made[k].run_id[-8:] for k in ("lr0.1", "lr0.3", "evil")]
    assert set(data["runs"][0]) >= {"id", "short_id", "name", "points", "drawn", "nonfinite"}
    assert data["points_drawn"] == sum(r["drawn"] for r in data["runs"]) and data["runs"][2]["nonfinite"] == 4
    root = parse_svg((tmp_path / "metrics.loss.svg").read_text())
    assert sum(len(s) for p in series_paths(root) for s in p) == data["points_drawn"]
    rc, out, err = main("plot", "metrics.loss", "--root", str(runs_dir))
    assert rc == 0 and out.startswith(f"wrote {tmp_path / 'metrics.loss.svg'}: metrics.loss for 3 run(s)")
    assert err == "exprag-plus: replaced metrics.loss.svg\n"
    from exprag_plus.cli_pictures import default_svg_name
    assert default_svg_name("metrics/a b:c") == "metrics_a_b_c.svg" and default_svg_name("..") == "plot.svg"


def test_plot_cli_runs_where_x_log_and_errors(main, runs_dir: Path, tmp_path: Path) -> None:
    made = make_runs(runs_dir)
    out_svg = str(tmp_path / "p.svg")
    rc, out, err = main("plot", "metrics.lss", "--root", str(runs_dir), "-o", out_svg)
    assert rc == 2 and "nearest: metrics.loss" in err and not Path(out_svg).exists()
    rc, out, err = main("plot", "metrics.loss", "--x", "metrics.acx", "--root", str(runs_dir), "-o", out_svg)
    assert rc == 2 and "--x 'metrics.acx'" in err and "nearest: metrics.acc" in err
    rc, out, err = main("plot", "metrics.loss", "--where", "hparams.lr>0.2", "--root", str(runs_dir), "-o", out_svg,
                        "--json")
    assert rc == 0 and [r["name"] for r in json.loads(out)["runs"]] == ["sweep lr=0.3"]
    rc, out, err = main("plot", "metrics.loss", "--where", "hparams.lr>5", "--root", str(runs_dir), "-o", out_svg)
    assert rc == 1 and "no run matching the --where has 'metrics.loss'" in err
    ref = made["lr0.3"].run_id[-8:]
    rc, out, err = main("plot", "metrics.shift", ref, "latest", "--log", "--root", str(runs_dir), "-o", out_svg,
                        "--json")
    data = json.loads(out)
    assert rc == 0 and [r["short_id"] for r in data["runs"]] == [ref]
    assert "left out 1 run(s) without 'metrics.shift'" in err and "--log: 26 value(s) <= 0 left out as gaps" in err
    rc, out, err = main("plot", "metrics.loss", "--x", "elapsed", "--root", str(runs_dir), "-o", out_svg)
    assert rc == 0 and "elapsed (s)" in texts(parse_svg(Path(out_svg).read_text()))
    rc, out, err = main("plot", "metrics.loss", "--x", "metrics.acc", "--limit", "1", "--root", str(runs_dir),
                        "-o", out_svg, "--json")
    assert rc == 0 and len(json.loads(out)["runs"]) == 1 and "latest 1 of 3 runs" in err
    rc, out, err = main("plot", "metrics.loss", "--root", str(runs_dir), "-o", "-")
    assert rc == 0 and parse_svg(out) is not None
    rc, out, err = main("plot", "metrics.loss", "--root", str(runs_dir), "-o", str(tmp_path / "no" / "p.svg"))
    assert rc == 2 and f"there is no folder {tmp_path / 'no'}" in err
    rc, out, err = main("plot", "metrics.loss", "--root", str(runs_dir), "-o", str(tmp_path))
    assert rc == 2 and "is a folder" in err
    rc, out, err = main("plot", "metrics.loss", "abcdef99", "--root", str(runs_dir))
    assert rc == 2 and "no run matches 'abcdef99'" in err


def test_plot_of_runs_that_count_epochs_draws_over_epochs(main, tmp_path: Path) -> None:
    """Trial 7: `--parse` read `epoch 3 ... val_loss=0.4`, and plot drew against the point index ("no step
    field") although `keys` listed epoch as an axis. With no step anywhere, x is the first axis the runs track."""
    root = tmp_path / "runs"
    for lr in (0.1, 0.2):
        with Experiment(f"lr{lr}", root=str(root), snapshot=False) as exp:
            for e in range(4):
                exp.track({"epoch": e + 10, "val_loss": lr / (e + 1)})
    out_svg = tmp_path / "p.svg"
    rc, out, err = main("plot", "val_loss", "--root", str(root), "-o", str(out_svg), "--json")
    assert rc == 0 and "x is epoch (no run tracks step; --x names another axis)" in err
    words = texts(parse_svg(out_svg.read_text()))
    assert "epoch" in words and "13" in words, words  # the epochs, not the indices 0..3
    with Experiment("stepped", root=str(root), snapshot=False) as exp:
        exp.track({"step": 0, "epoch": 0, "val_loss": 1.0})
    rc, out, err = main("plot", "val_loss", "--root", str(root), "-o", str(out_svg))
    assert rc == 0 and "x is epoch" not in err and "no step field in" in err


def write_big_run(runs_dir: Path, n: int) -> str:
    """A run file with n track lines, written directly (as the writer would) to stay fast."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    rid = "01900000-0000-7000-8000-" + uuid.uuid4().hex[:12]
    t = "2026-01-01T00:00:00.000000Z"
    lines = [json.dumps({"type": "run_start", "run_id": rid, "seq": 0, "time": t, "elapsed_ms": 0.1,
                         "format": "exprag-plus/1", "name": "long", "metadata": {}, "git": None})]
    for i in range(n):
        v: Any = "NaN" if 1000 <= i < 1100 else round(5.0 / (1 + i / 1000.0) + (i % 13) * 1e-3, 6)
        lines.append(f'{{"type":"track","run_id":"{rid}","seq":{i + 1},"time":"{t}","elapsed_ms":{i * 0.5},'
                     f'"value":{{"step":{i},"loss":{json.dumps(v)}}},"note":null}}')
    lines.append(json.dumps({"type": "run_end", "run_id": rid, "seq": n + 1, "time": t, "elapsed_ms": n * 0.5,
                             "status": "completed", "summary": {"loss": {"last": 1.0, "count": n}, "step": {}}}))
    (runs_dir / f"{rid}.jsonl").write_text("\n".join(lines) + "\n")
    return rid


def test_plot_cli_200k_points_stays_small(main, runs_dir: Path, tmp_path: Path) -> None:
    write_big_run(runs_dir, 200_000)
    out_svg = tmp_path / "big.svg"
    rc, out, err = main("plot", "loss", "--root", str(runs_dir), "-o", str(out_svg), "--json", "--log")
    data = json.loads(out)
    assert rc == 0 and data["runs"][0]["points"] == 200_000 and data["runs"][0]["nonfinite"] == 100
    assert data["points_drawn"] <= 4 * 900 and out_svg.stat().st_size < 200_000
    assert len(series_paths(parse_svg(out_svg.read_text()))[0]) == 2


# --- the report -------------------------------------------------------------------------------------


class Page(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: List[Tuple[str, Dict[str, Any]]] = []
        self.text: List[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_lower_is_better_rule() -> None:
    assert R.lower_is_better("metrics.val_loss") and R.lower_is_better("eval.errorRate")
    assert R.lower_is_better("test.mse") and not R.lower_is_better("metrics.acc")
    assert not R.lower_is_better("metrics.lossless_ratio") and R.is_counter("epoch")
    assert not R.is_ranked("train.lr") and not R.is_ranked("step") and R.is_ranked("metrics.acc")


def test_report_is_inert_self_contained_and_marks_the_best(runs_dir: Path, repo: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    made = make_runs(runs_dir)
    monkeypatch.chdir(repo)
    (repo / "train.py").write_text("print('changed')\n")
    (repo / "new <file>.py").write_text("x = 1\n")
    with Experiment("dirty run", root=str(runs_dir)) as exp:
        exp.track({"step": 0, "metrics": {"loss": 5.0, "acc": 0.1}, **{f"m{k:02d}": k for k in range(14)}})
    runs = load_runs(str(runs_dir))
    page = R.html_report(runs, max_metrics=12)
    p = Page()
    p.feed(page)
    p.close()
    tags = [t for t, _ in p.tags]
    assert "script" not in tags and not {"link", "img", "iframe", "object", "embed", "base"} & set(tags)
    assert not [a for _, attrs in p.tags for a in attrs if a.startswith("on")]
    assert not re.search(r"(?i)https?:|url\(|@import|//[a-z]", page.replace("http-equiv", ""))
    assert "<script>alert(1)</script>" in "".join(p.text) and "<img src=x onerror=alert(2)>" in "".join(p.text)
    csp = next(a["content"] for t, a in p.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp
    # best: lowest final loss (lr=0.3), highest final acc (lr=0.3), stated in the page
    text = " ".join(p.text)
    assert "lowest for metrics whose last name segment contains one of the words loss" in text
    row = re.search(r"<tr><td><code>metrics\.loss</code></td><td>lower</td>(.*?)</tr>", page).group(1)
    cells = re.findall(r"<td class=\"([^\"]*)\"[^>]*>(.*?)</td>", row)
    assert [c for c, _ in cells].count("num best") == 1 and "best" in cells[1][0] and "&#9733;" in cells[1][1]
    # code state: the snapshot branch and the dirty files, escaped
    dirty = runs[-1].git
    assert dirty["dirty"] and dirty["snapshot_branch"] in page and "new &lt;file&gt;.py" in page
    # 16 metrics + step: 12 plotted, with a note; every svg well-formed
    assert "Showing 12 of 17 metrics" in text and page.count("<svg ") == 12 + 1  # one plot per metric, and the progress chart
    assert page.count("class=\"exprag-progress\"") == 1
    for svg in re.findall(r"<svg .*?</svg>", page, re.S):
        ET.fromstring(svg)
    assert made["evil"].run_id in page


def test_report_cli(main, runs_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made = make_runs(runs_dir)
    monkeypatch.chdir(tmp_path)
    rc, out, err = main("report", "--root", str(runs_dir), "--json")
    data = json.loads(out)
    assert rc == 0 and data["path"] == str(tmp_path / "report.html") and len(data["runs"]) == 3
    assert data["plotted"] == ["metrics.acc", "metrics.loss", "metrics.shift"] and data["metrics"] == 3
    rc, out, err = main("report", made["lr0.1"].run_id[:13], "--where", "hparams.lr<1", "-o", "one.html",
                        "--root", str(runs_dir))
    assert rc == 0 and out.startswith(f"wrote {tmp_path / 'one.html'}: 1 run(s), 3 plot(s)")
    rc, out, err = main("report", "--where", "hparams.lr>9", "--root", str(runs_dir))
    assert rc == 1 and "no run matches the --where" in err
    rc, out, err = main("report", "--root", str(tmp_path / "empty"))
    assert rc == 1 and "no runs in" in err


def test_report_min_and_max_set_a_metric_direction_its_name_does_not_tell(main, runs_dir: Path, tmp_path: Path) -> None:
    """`best_val` names no cost: --min says lower is better (trial 5 saw the worst run starred)."""
    make_runs(runs_dir)
    rows = {}
    for flags in ([], ["--min", "metrics.acc", "--max", "metrics.loss"]):
        page = tmp_path / "r.html"
        rc, out, err = main("report", *flags, "-o", str(page), "--root", str(runs_dir))
        assert rc == 0, err
        rows[bool(flags)] = {m: re.search(rf"<tr><td><code>{m}</code></td><td>(\w+)</td>(.*?)</tr>", page.read_text()).groups()
                             for m in ("metrics.acc", "metrics.loss")}
    assert rows[False]["metrics.acc"][0] == "higher" and rows[True]["metrics.acc"][0] == "lower"
    assert rows[False]["metrics.loss"][0] == "lower" and rows[True]["metrics.loss"][0] == "higher"
    assert rows[False]["metrics.acc"][1] != rows[True]["metrics.acc"][1]  # the star moved
    rc, out, err = main("report", "--min", "metrics.ac", "--root", str(runs_dir))
    assert rc == 2 and "--min 'metrics.ac'" in err and "metrics.acc" in err
    progress_of = lambda text: re.search(r'<h2>Progress</h2>\s*<p class="note"><b>([^<]*)</b>', text).group(1)
    assert main("report", "-o", str(page), "--root", str(runs_dir))[0] == 0
    first = progress_of(page.read_text())
    other = "metrics.loss" if first == "metrics.acc" else "metrics.acc"  # trial 9: --min val_loss charted loss
    assert main("report", "--min", other, "-o", str(page), "--root", str(runs_dir))[0] == 0
    assert progress_of(page.read_text()) == other


def test_report_into_a_named_pipe_writes_into_it_and_leaves_it_a_pipe(main, runs_dir: Path, tmp_path: Path) -> None:
    """`-o /dev/null` (or /dev/stdout, a FIFO) is written into: replacing it, as an atomic write of a
    regular file does, once put a regular file in place of /dev/null on a machine (as root)."""
    make_runs(runs_dir)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: List[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    rc, out, err = main("report", "-o", str(fifo), "--root", str(runs_dir))
    reader.join(10)
    assert rc == 0, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and got[0].startswith(b"<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".exprag-plus-")] == []


def test_an_output_named_for_another_format_is_refused_before_any_work(main, runs_dir: Path, tmp_path: Path) -> None:
    """`plot -o chart.png` wrote SVG under a .png name (trial 6): an image viewer then fails, far from the
    cause. Another format's suffix is an input error naming the file to give; a name without one, any
    case of the right one, and a device are written."""
    make_runs(runs_dir)
    for cmd, bad, good in ((["plot", "metrics.acc"], "chart.png", "chart.SVG"), (["report"], "r.pdf", "r.htm"),
                           (["progress", "metrics.acc"], "p.png", "p.v2")):
        rc, out, err = main(*cmd, "-o", str(tmp_path / bad), "--root", str(runs_dir))
        kind = "HTML" if cmd == ["report"] else "SVG"
        want = str(tmp_path / bad).rsplit(".", 1)[0] + (".html" if kind == "HTML" else ".svg")
        assert (rc, out) == (2, "") and err.strip().endswith(
            f"-o {str(tmp_path / bad)!r}: this writes {kind}, not {bad.rsplit('.', 1)[1].upper()}; "
            f"name it {want!r} (or -o - for stdout)"), err
        assert not (tmp_path / bad).exists()
        rc, out, err = main(*cmd, "-o", str(tmp_path / good), "--root", str(runs_dir))
        assert rc == 0 and (tmp_path / good).read_text().lstrip().startswith(("<?xml", "<!DOCTYPE")), err
    rc, out, err = main("plot", "metrics.acc", "-o", "/dev/null", "--root", str(runs_dir))
    assert rc == 0 and "wrote /dev/null" in out
    from exprag_plus.cli_pictures import _target
    assert _target("/dev/stdout", ".svg") == "/dev/stdout"  # a symlink, to a pipe or terminal: written into
    with open(tmp_path / "redirected.svg", "wb") as f:  # `plot -o /dev/stdout > f.svg`: opened again by name,
        p = subprocess.run([sys.executable, "-m", "exprag_plus", "plot", "metrics.acc", "-o", "/dev/stdout",
                            "--root", str(runs_dir)], stdout=f, stderr=subprocess.PIPE, cwd=ROOT)
    page = (tmp_path / "redirected.svg").read_text()  # it was truncated, then our line overwrote its start
    assert p.returncode == 0 and page.startswith("<?xml") and page.rstrip().endswith("</svg>"), page[:80]
    mine = tmp_path / "mine.py"  # red team (trial 10): report -o mine.py replaced the user's code
    mine.write_text("precious\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "link.html").symlink_to(victim)
    for name, words in (("mine.py", "exists and is no HTML file this wrote"), ("link.html", "is a symlink")):
        rc, out, err = main("report", "-o", str(tmp_path / name), "--root", str(runs_dir))
        assert rc == 2 and words in err, err
    assert mine.read_text() == victim.read_text() == "precious\n"


# --- in a real browser -------------------------------------------------------------------------------


def png_pixels(data: bytes) -> Tuple[int, int, set]:
    """Width, height and the set of distinct pixel values of an 8-bit non-interlaced PNG (stdlib only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0 and ctype in (0, 2, 4, 6)
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    assert len(raw) == h * (stride + 1)
    prev = bytearray(stride)
    m7, m8 = int.from_bytes(b"\x7f" * stride, "big"), int.from_bytes(b"\x80" * stride, "big")
    pixels = set()
    for y in range(h):
        start = y * (stride + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if ftype == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif ftype == 2:  # Up: bytewise addition without carries, on big integers
            a, b = int.from_bytes(line, "big"), int.from_bytes(prev, "big")
            line = bytearray((((a & m7) + (b & m7)) ^ ((a ^ b) & m8)).to_bytes(stride, "big"))
        elif ftype == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif ftype == 4:  # Paeth
            for i in range(stride):
                a, c = (line[i - bpp], prev[i - bpp]) if i >= bpp else (0, 0)
                b = prev[i]
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp))
        prev = line
    return w, h, pixels


def screenshot(page: Path, png: Path, profile: Path, size: str = "1200,2000") -> None:
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={size}", page.as_uri()]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert png.exists(), f"chromium wrote no screenshot (exit {p.returncode}):\n{p.stderr[-2000:]}"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_report_renders_in_chromium(runs_dir: Path, tmp_path: Path) -> None:
    make_runs(runs_dir)
    page = tmp_path / "report.html"
    page.write_text(R.html_report(load_runs(str(runs_dir))), encoding="utf-8")
    png = tmp_path / "report.png"
    screenshot(page, png, tmp_path / "profile")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    w, h, pixels = png_pixels(data)
    assert (w, h) == (1200, 2000)
    assert len(pixels) > 200  # text, lines and antialiasing: far from a blank page
    assert bytes((0xf6, 0xf8, 0xfa)) in pixels and b"\xff\xff\xff" in pixels  # page and card backgrounds
    assert bytes.fromhex(P.PALETTE[0][1:]) in pixels  # a run's colour swatch, drawn exactly


def test_log_plot_of_values_near_the_float_limits_draws() -> None:
    """The 5% padding took log10(1e300) past 308, and 10 ** 330 raised OverflowError (an internal error)."""
    import xml.dom.minidom

    from exprag_plus.plot import svg_lines

    for ys in ([1e-300, 1e300], [1e308, 1.7e308], [5e-324, 1e-320]):
        xml.dom.minidom.parseString(str(svg_lines([("m<&>", [0, 1], ys)], log=True)))
