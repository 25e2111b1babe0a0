"""The agent skill: spec rules, the committed copy, and every command it shows, run for real."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from exprag_plus import skill

from conftest import ROOT, cli, git

TEXT = skill.render()
FRONT, BODY = TEXT.split("---\n", 2)[1:]
ALLOWED_KEYS = {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}


def frontmatter() -> dict:
    """Parsed by a real YAML parser: a client that parses strictly must not skip the skill."""
    import yaml

    loaded = yaml.safe_load(FRONT)
    assert isinstance(loaded, dict) and all(isinstance(v, str) for v in loaded.values()), loaded
    return loaded


def test_frontmatter_is_yaml_that_keeps_every_character() -> None:
    fm = frontmatter()
    assert fm["name"] == skill.NAME and fm["description"] == skill.DESCRIPTION
    assert ": " in fm["description"]  # the text that once broke the unquoted form survives quoting


@pytest.mark.skipif(sys.version_info < (3, 11), reason="skills-ref (the reference validator) needs Python 3.11+")
@pytest.mark.parametrize("where", ["generated", "committed"])
def test_reference_validator_accepts_the_skill(tmp_path: Path, where: str) -> None:
    folder = ROOT / "skills" / "exprag-plus"
    if where == "generated":
        folder = tmp_path / "exprag-plus"
        folder.mkdir()
        (folder / "SKILL.md").write_text(TEXT, encoding="utf-8")
    p = subprocess.run([sys.executable, "-c", "from skills_ref.cli import main; main()", "validate", str(folder)],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "Valid skill" in p.stdout, p.stdout + p.stderr


def test_spec_rules() -> None:
    fm = frontmatter()
    assert set(fm) <= ALLOWED_KEYS and {"name", "description"} <= set(fm)
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", fm["name"]) and len(fm["name"]) <= 64
    assert fm["name"] == Path(skill.TARGETS["claude"]).parent.name == "exprag-plus"
    assert 1 <= len(fm["description"]) <= 1024 and "<" not in fm["description"] and ">" not in fm["description"]
    assert fm["description"].startswith("Answers ") and "Use it when" in fm["description"]  # third person, when
    assert len(fm.get("compatibility", "")) <= 500
    assert len(BODY.splitlines()) < 500
    assert len(BODY) / 4 < 5000  # about 5,000 tokens at ~4 characters a token


def test_committed_skill_is_the_generators_output() -> None:
    committed = ROOT / "skills" / "exprag-plus" / "SKILL.md"
    assert committed.read_text(encoding="utf-8") == TEXT, "run: exprag-plus skill --write skills/exprag-plus --force"


def test_it_covers_what_an_agent_needs() -> None:
    for kind in ("run_start", "track", "action", "action_run", "task", "run_end"):
        line = next(l for l in BODY.splitlines() if l.startswith('{"type":"%s"' % kind))
        assert json.loads(line.replace('"..."', '"x"'))["type"] == kind
    for needle in ("keys", "--min", "--final", "compare latest~1 latest", "history", "--where", "restore <run>",
                   "replay <run>", "diff <run> <run2>", "--no-input", "--set", "task info", "jq", "crashed",
                   '"NaN"', "run/<run_id>", "base_commit", "without asking", "--limit", "step"):
        assert needle in BODY, needle
    assert "metrics.acc" not in re.sub(r"```json.*?```|```text.*?```", "", BODY, flags=re.S)  # no literal metric


def fenced_commands() -> list:
    return [l for block in re.findall(r"```bash\n(.*?)```", BODY, re.S) for l in block.splitlines() if l.strip()]


TRAIN = """\
import sys
from exprag_plus import Experiment
lr = float(sys.argv[1])
with Experiment("lr sweep", metadata={"hparams": {"lr": lr}}) as exp:
    for step in range(5):
        exp.track({"step": step, "metrics": {"val_acc": 0.5 + lr * step, "loss": 1.0 / (step + 1)}})
"""

ACTION = """\
from exprag_plus import Action, Experiment

class Export(Action):
    target: str = "model"

    def describe(self):
        return "Write a file"

    def execute(self, interaction):
        folder = interaction.text("folder", "Where to?")
        return {"folder": folder}

if __name__ == "__main__":
    with Experiment("with action") as exp:
        exp.track({"metrics": {"val_acc": 0.1, "loss": 2.0}})
        exp.add_action(Export())
"""


@pytest.fixture
def project(repo: Path, tmp_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    (repo / "train.py").write_text(TRAIN)
    (repo / "act.py").write_text(ACTION)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "scripts")
    for lr in ("0.01", "0.1"):
        subprocess.run([sys.executable, "train.py", lr], cwd=repo, env=env, check=True)
    (repo / "train.py").write_text(TRAIN.replace("1.0 /", "2.0 /"))  # the next run is dirty: a snapshot
    subprocess.run([sys.executable, "train.py", "0.05"], cwd=repo, env=env, check=True)
    (repo / "notes.txt").write_text("a change between the latest two runs\n")
    subprocess.run([sys.executable, "act.py"], cwd=repo, env=env, check=True)
    schema = repo / "t1.yaml"
    schema.write_text((ROOT / "examples" / "schemas" / "seed_intermediate_p2.yaml").read_text())
    subprocess.run([sys.executable, "-m", "exprag_plus", "task", "run", str(schema), "--input", "p1=1"], cwd=repo,
                   env=env, check=True, capture_output=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "exprag-plus"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m exprag_plus \"$@\"\n")
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    runs = sorted((repo / ".runs").glob("*.jsonl"))[:4]  # the sweep (two clean, one dirty) and the action run
    short = [p.stem[-8:] for p in runs]
    return {"repo": repo, "env": {**env, "PATH": f"{bindir}{os.pathsep}{env['PATH']}"},
            "values": {"<metric>": "metrics.val_acc", "<run>": short[2], "<run2>": short[0], "<path>": "hparams.lr",
                       "<value>": "0.05", "<action>": "Export", "<key>": "folder", "<answer>": "out",
                       "<schema-file>": str(schema), "<input>": "p1", "<input-value>": "1"},
            "action_run": short[3]}


def fill(command: str, project: dict) -> str:
    """Placeholders replaced by names from the test's runs, as an agent takes them from `keys` and `runs`."""
    for placeholder, value in project["values"].items():
        if placeholder == "<run>" and "actions " in command:
            value = project["action_run"]
        command = command.replace(placeholder, value)
    return command


def test_every_fenced_command_runs(project: dict) -> None:
    commands = fenced_commands()
    assert len(commands) >= 14
    for command in commands:
        filled = fill(command, project)
        assert not re.search(r"<[a-z-]+>", filled), f"unfilled placeholder in {command!r}"
        p = subprocess.run(filled, shell=True, cwd=project["repo"], env=project["env"], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, f"{filled!r} failed ({p.returncode}): {p.stderr}"
        if "--json" in filled:
            json.loads(p.stdout)
        assert p.stdout.strip(), filled


def test_documented_json_keys_are_real(project: dict) -> None:
    """Each JSON example's top-level keys are what the command really prints."""
    examples = re.findall(r"```bash\n(exprag-plus [^\n]*--json)\n```\n\n```json\n(.*?)```", BODY, re.S)
    assert len(examples) >= 4
    for command, example in examples:
        filled = fill(command, project)
        real = json.loads(subprocess.run(filled, shell=True, cwd=project["repo"], env=project["env"],
                                         capture_output=True, text=True, check=True).stdout)
        shown = json.loads(re.sub(r'"\.\.\."', '"x"', example))
        assert set(shown) == set(real), command


def test_write_print_install(tmp_path: Path, repo: Path) -> None:
    target = tmp_path / "deep" / "er"
    p = cli("skill", "--write", str(target), cwd=repo)
    assert p.returncode == 0 and (target / "SKILL.md").read_text() == TEXT
    assert cli("skill", "--write", str(target / "SKILL.md"), cwd=repo).stdout.startswith("unchanged")
    (target / "SKILL.md").write_text("my own edits\n")
    p = cli("skill", "--write", str(target), cwd=repo)
    assert p.returncode == 2 and "--force" in p.stderr and (target / "SKILL.md").read_text() == "my own edits\n"
    assert cli("skill", "--write", str(target), "--force", cwd=repo).returncode == 0
    assert (target / "SKILL.md").read_text() == TEXT
    assert cli("skill", cwd=repo).stdout == TEXT and cli("skill", "--print", cwd=repo).stdout == TEXT
    sub = repo / "sub"
    sub.mkdir()
    p = cli("skill", "--install", cwd=sub)
    assert p.returncode == 0
    for rel in skill.TARGETS.values():
        assert (repo / rel).read_text() == TEXT
    p = cli("skill", "--install", "claude", "--json", cwd=repo)
    assert json.loads(p.stdout)["written"][0]["status"] == "unchanged"
    p = cli("skill", "--install", "vim", cwd=repo)
    assert p.returncode == 2 and p.stderr.count("\n") == 1


def test_skill_ships_in_the_package() -> None:
    p = subprocess.run([sys.executable, "-c", "from exprag_plus import skill; print(skill.render()[:25])"],
                       cwd="/", env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert p.stdout.startswith('---\nname: "exprag-plus"')
