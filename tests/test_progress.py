"""`exprag-plus progress`: the loop's view across runs, through the real CLI; the chart parsed and drawn."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List

import pytest

from exprag_plus import Experiment, load_runs
from exprag_plus import report as R

from conftest import cli
from test_pictures import png_pixels, screenshot

NS = {"s": "http://www.w3.org/2000/svg"}
LOSSES = [1.0, 0.8, 0.9, None, 0.7, 0.75, 0.72]  # None: the run failed before tracking anything


@pytest.fixture
def loop(runs_dir: Path) -> List[str]:
    made = []
    for i, loss in enumerate(LOSSES):
        try:
            with Experiment("try", metadata={"i": i}, root=str(runs_dir)) as exp:
                if loss is None:
                    raise RuntimeError("out of memory")
                exp.track({"step": 0, "val_loss": loss + 0.5})
                exp.track({"step": 1, "val_loss": loss})  # the best per run is its minimum
                exp.track({"step": 2, "val_loss": loss + 0.1})
        except RuntimeError:
            pass
        made.append(exp.run_id)
    return made


def test_progress_json_and_table(runs_dir: Path, loop: List[str]) -> None:
    assert cli("tag", loop[4], "keep", "--root", str(runs_dir)).returncode == 0
    assert cli("note", loop[4], "lower lr won", "--kind", "decision", "--root", str(runs_dir)).returncode == 0
    p = cli("progress", "val_loss", "--min", "--json", "--root", str(runs_dir))
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert [r["id"] for r in res["runs"]] == loop  # start order
    assert [r["value"] for r in res["runs"]] == LOSSES
    assert [r["improved"] for r in res["runs"]] == [True, True, False, False, True, False, False]
    assert [r["best_so_far"] for r in res["runs"]] == [1.0, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7]
    assert res["since_improvement"] == 2 and res["improvements"] == 3 and res["best"]["id"] == loop[4]
    assert res["runs"][3]["status"] == "failed"
    assert res["runs"][4]["tags"] == ["keep"] and res["runs"][4]["latest_note"]["text"] == "lower lr won"
    out = cli("progress", "val_loss", "--min", "--root", str(runs_dir)).stdout
    assert "2 run(s) since the last improvement" in out and "lower lr won" in out
    # higher is better: every run after the first that beats it
    res = json.loads(cli("progress", "val_loss", "--json", "--root", str(runs_dir)).stdout)
    assert [r["improved"] for r in res["runs"]] == [True, False, False, False, False, False, False]
    # --where narrows; a step counter or a typo is an error
    res = json.loads(cli("progress", "val_loss", "--min", "--where", "i>=4", "--json", "--root", str(runs_dir)).stdout)
    assert [r["id"] for r in res["runs"]] == loop[4:] and res["since_improvement"] == 2
    for args, words in ((("progress", "step"), "is an axis"), (("progress", "val_los"), "val_loss")):
        p = cli(*args, "--root", str(runs_dir))
        assert p.returncode == 2 and words in p.stderr and p.stderr.count("\n") == 1


def test_progress_svg_marks_every_run(runs_dir: Path, loop: List[str], tmp_path: Path) -> None:
    out = tmp_path / "progress.svg"
    p = cli("progress", "val_loss", "--min", "-o", str(out), "--json", "--root", str(runs_dir))
    assert p.returncode == 0 and json.loads(p.stdout)["svg"] == str(out)
    root = ET.fromstring(out.read_text())
    classes = [el.get("class") for el in root.iter() if el.get("class")]
    assert classes.count("improved") == 3 and classes.count("run") == 3  # every run with a value is a dot
    assert classes.count("crashed") == 1 and classes.count("frontier") == 1
    frontier = root.find(".//s:path[@class='frontier']", NS).get("d")
    assert frontier.startswith("M") and frontier.count("V") == 2 + 4  # one step per run after the first
    assert "3 improvement(s), 2 since the last" in root.find("s:title", NS).text


def test_report_has_the_progress_chart_and_notes(runs_dir: Path, loop: List[str]) -> None:
    assert cli("note", loop[1], "warmup helps <a>", "--kind", "observation", "--root", str(runs_dir)).returncode == 0
    page = R.html_report(load_runs(str(runs_dir)))
    assert page.count('class="exprag-progress"') == 1 and "<h2>Progress</h2>" in page
    assert "<b>observation</b>: warmup helps &lt;a&gt;" in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_progress_chart_renders_in_chromium(runs_dir: Path, loop: List[str], tmp_path: Path) -> None:
    out = tmp_path / "progress.svg"
    assert cli("progress", "val_loss", "--min", "-o", str(out), "--root", str(runs_dir)).returncode == 0
    page = tmp_path / "progress.html"
    page.write_text(f"<!DOCTYPE html><html><body style='margin:0'>{out.read_text().split('?>', 1)[1]}</body></html>")
    png = tmp_path / "progress.png"
    screenshot(page, png, tmp_path / "profile", size="900,420")
    w, h, pixels = png_pixels(png.read_bytes())
    assert (w, h) == (900, 420)
    assert bytes.fromhex("2ca02c") in pixels  # improved dots and the frontier, drawn exactly
    assert bytes.fromhex("d62728") in pixels  # the failed run's cross
    assert len(pixels) > 100


def test_progress_rows_are_bounded_the_chart_is_not(runs_dir: Path, loop: List[str], tmp_path: Path) -> None:
    """Of many runs an agent reads every new best and the latest N; the chart still draws every run."""
    p = cli("progress", "val_loss", "--min", "--limit", "2", "--json", "-o", str(tmp_path / "p.svg"),
            "--root", str(runs_dir))
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert [r["id"] for r in res["runs"]] == [loop[0], loop[1], loop[4], loop[5], loop[6]]
    assert [r["index"] for r in res["runs"]] == [0, 1, 4, 5, 6] and (res["shown"], res["matched"]) == (5, 7)
    assert p.stderr == "exprag-plus: showing 5 of 7 runs: every new best and the latest 2 (--limit 0 for all)\n"
    dots = ET.parse(tmp_path / "p.svg").getroot().findall(".//s:circle[@class]", NS)
    assert len(dots) == 6  # every run with a value (one failed before tracking)
    full = json.loads(cli("progress", "val_loss", "--min", "--limit", "0", "--json", "--root", str(runs_dir)).stdout)
    assert [r["id"] for r in full["runs"]] == loop and full["shown"] == 7
    assert len(json.loads(cli("progress", "val_loss", "--min", "--json", "--root", str(runs_dir)).stdout)["runs"]) == 7
