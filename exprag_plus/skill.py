"""The agent skill: SKILL.md text that teaches a coding agent to answer run questions with exprag-plus.

Agents copy examples literally, so every command here uses placeholders (`<run>`, `<metric>`) that the
text tells them to fill from `keys`, and a test runs every fenced shell command against a real runs
folder. `skills/exprag-plus/SKILL.md` is this module's output, kept identical by a test.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

from .files import write_atomic

NAME = "exprag-plus"
DESCRIPTION = (
    "Answers questions about past experiment runs recorded by exprag-plus (one JSONL file per run in "
    ".runs/): which run was best by a metric, what changed between runs (hyperparameters, metrics, code), "
    "a metric's history, the exact code of a run restored or replayed, post-run actions and task schemas; "
    "records commands and notes, tags and progress of an experiment loop. "
    "Use it when the user asks about experiments, training runs, metrics, sweeps or results, or wants a "
    "run's code back, and a .runs/ folder or the exprag-plus command is present."
)
TARGETS: Dict[str, str] = {
    "claude": ".claude/skills/exprag-plus/SKILL.md",
    "agents": ".agents/skills/exprag-plus/SKILL.md",
    "opencode": ".opencode/skills/exprag-plus/SKILL.md",
}

BODY = r"""
# exprag-plus: experiment run memory

Each run of the user's code appended one JSON line per event to `.runs/<run_id>.jsonl` (at the top of the
main worktree, shared by all linked worktrees; `$EXPRAG_PLUS_DIR` or `--root DIR` point elsewhere) and
recorded the code that ran. The
`exprag-plus` command answers questions about them. Add `--json` to any command: strict JSON on
stdout, notes and warnings on stderr. Exit codes: 0 ok (an empty listing too), 1 no answer or a
failed request, 2 bad input, an unknown run too (the one-line error says what to fix).

## Recording

Anything: `exprag-plus run [--name N] [--meta K=V] [--note TEXT] -- CMD` runs CMD unchanged and records a
run (stderr: `run <short id> recording ...`; last line: status and metrics). Lines of its output holding
only a JSON object, or `NAME: NUMBER`, become metrics (other shapes: `--parse 'epoch (?P<epoch>\d+) loss
(?P<loss>[0-9.]+)'`, named groups): no recording code needed in the script. In Python:

```text
with Experiment("name", {"lr": 0.1}) as exp:      # from exprag_plus import Experiment
    exp.track({"loss": l, "step": s})            # step/epoch/iteration/iter/global_step are axes
    exp.note("why", kind="hypothesis"); exp.tag("keep")
    exp.artifact(f"{exp.run_id}.pt", kind="model")
```

## Running an experiment loop

One run per idea; the memory holds why, not only numbers. Per experiment:
1. `exprag-plus run --name <idea> --note "<what you expect, and why>" --meta args.<flag>=<default>... -- <command>`
   (note kind `hypothesis`; CMD's flags, `--lr 0.1`, `--lr=0.1` or `lr=0.1`, become metadata `args.lr`; `--meta args.X`
   the defaults that matter and are not in CMD).
   Read the status and metrics it prints last (a failed run: `exprag-plus log <run>`).
2. Decide, and record it: `exprag-plus note <run> "<kept/discarded because...>" --kind decision` and
   `exprag-plus tag <run> keep` (or `discard`, `baseline`). Commit a code change you keep (only your own
   edits: `git add -p`): `show` of a run whose code you committed unchanged says `same code as <commit>`
   (untracked files are code too: commit or .gitignore them).
3. `exprag-plus progress <metric> --min` (`--min`: lower is better): every run in start order with its
   best value, the best so far, and "K runs since the last improvement"; `-o p.svg` draws it.

Tomorrow, "what was tried, why, what worked": `notes` (every note, oldest first); `progress <metric>`; `runs --where 'tag=keep'` or `'note~<word>'`; `diff <run> --base` (its change against the commit it
started from); `restore <run>` (its code). Notes are append-only: correct with a new one.

```bash
exprag-plus runs --where 'tag=keep' --json
exprag-plus progress <metric> --json
exprag-plus diff <run> --base --stat
```

## Workflow: discover, query, cite

1. Discover the names first. Metric and metadata paths differ between projects (`metrics.val_acc`,
   `loss`, `hparams.lr`...). Never guess one: take it from `keys`. Several names for one idea
   (`val.accuracy`, `metrics.val_acc`): answer for each, never across names. Runs recorded by a framework integration (Transformers, Lightning,
   Keras, accelerate, Optuna) carry its own names (`eval_loss`, `train/loss`, `args.learning_rate`).
2. Ask with the one command below for the question; `<run>`, `<metric>`, `<path>` come from `keys`
   and `runs`.
3. Answer with the run's short id (the last 8 hex digits, as tables show them) and its name, say which
   rule ranked it, and quote the numbers from the output.

```bash
exprag-plus keys --json
```

```json
{"runs": 12, "fields": ["id", "name", "status", "started", "ended", "duration_s", "commit", "branch", "dirty", "host", "replay_of"],
 "metadata": {"hparams.lr": {"runs": 12, "distinct": 7, "values": [0.01, 0.1, 0.003, 0.03, 1.0]}},
 "metrics": {"metrics.val_acc": {"runs": 11, "kind": "number", "min": 0.41, "max": 0.93},
             "decision": {"runs": 5, "kind": "text", "values": ["kept", "discarded"]}},
 "axes": {"step": {"runs": 12, "kind": "number", "min": 0, "max": 1999}}}
```

`values` shows the first 5 distinct values; `distinct` says how many there are. Text and booleans are
data too (`kind: text`). `axes` (`step`, `epoch`, `iteration`, `iter`, `global_step`) are the x of
histories, never ranked.

A run reference `<run>` is a full id, a unique prefix, a unique suffix of 6+ characters (the short id),
`latest`, or `latest~N` (N runs before the latest). `--where` takes whole ids (`replay_of~<short id>`).

## One command per question

**Which run is best by a metric?** Ranks runs by each run's best value over its history (the maximum;
add `--min` when lower is better, as for a loss). Add `--final` to rank by the last tracked value
instead, and `--where` to filter. Of equal values the earliest-started wins; `tied` counts the others.

```bash
exprag-plus best <metric> --json
```

```json
{"metric": "metrics.val_acc", "rule": "highest best value over each run's history (max of all tracked values), among completed runs", "minimize": false, "final": false,
 "run": {"id": "01a2...c3d4", "short_id": "9f8e7d6c", "name": "lr sweep", "status": "completed", "commit": "4e1d2c0...", "dirty": false,
         "metadata": {"hparams": {"lr": 0.01}}, "metrics": {"metrics.val_acc": 0.91, "metrics.loss": 0.2}},
 "best": 0.93, "best_step": 14, "last": 0.91, "last_step": 19, "considered": 11, "nonfinite": 1, "without_metric": 1, "left_out": {"failed": 1}, "tied": 0, "tied_with": [], "warning": null, "ranking": [],
 "artifacts": [{"path": "checkpoints/9f8e7d6c.pt", "kind": "model", "bytes": 4821, "sha256": "ab12...", "status": "ok", "location": "/home/u/proj/checkpoints/9f8e7d6c.pt"}]}
```

**Where is the model of the best run?** The same `best <metric> --json` answers it: `artifacts` lists the
files the winner wrote (recorded by `exp.artifact(path)` or by `exprag-plus run -- CMD`): `path`
(relative to the git top level), `kind` (model, data, figure, log, other), `location` (the absolute path
here) and `status`: `ok` (same size and mtime, or same sha256), `changed` (overwritten since: not the
run's file any more; `now` gives its size and mtime) or `missing`. Say so when it is not `ok`. For
another run, or every run: `exprag-plus artifacts [<run>] --kind model --json`.

Report `best` and `last` when they differ (the run peaked before it ended). Only completed runs win
(also in `progress` and `report`): `left_out` counts the others that had a value, by status; `--all`
ranks them too. A `warning`, or `"NaN"` in the winner's other `metrics`, means it diverged: say so, and
name the best run that did not (`--where '<loss-metric>!=NaN'`). `ranking` holds the top 5; `nonfinite` counts runs
whose ranked value was NaN/Infinity, `without_metric` runs that never tracked it. Runs sharing a name
differ in their `metadata`.

**What changed between the latest two runs?** Metadata differences, final metrics with deltas (B-A),
and the two commits; then the code diff. `latest` and `latest~N` count every run; for the latest two of
one kind, take their ids from `exprag-plus runs --where 'name~<name>' --limit 2` (newest first). A
crashed or interrupted run stopped early: its deltas compare different points of training.

```bash
exprag-plus compare latest~1 latest --json
exprag-plus diff latest~1 latest --stat
```

```json
{"a": {"short_id": "..."}, "b": {"short_id": "..."},
 "metadata": [{"path": "hparams.lr", "a": 0.01, "b": 0.1, "only_in": null}],
 "metrics": [{"path": "metrics.val_acc", "a": 0.88, "b": 0.93, "delta": 0.05}], "axes": [{"path": "step", "a": 19, "b": 9}],
 "code": {"a": {"commit": "...", "branch": "main", "dirty": false, "base_commit": "..."}, "b": {}, "same_commit": false}}
```

**How did a metric evolve in a run?** Points carry `seq` (record order), `step` (when the tracked
value had a `step` field) and `value`; long histories are sampled to 100 points (first, last, min and
max kept; a note on stderr says so; `--max-points 0` for all). `--step N` gives the point at step N.
A point also carries any other counter its record held (`epoch`, `iteration`...).

```bash
exprag-plus history <run> <metric> --json
```

```json
{"run": "01a2...", "short_id": "9f8e7d6c", "metric": "metrics.loss", "count": 2000, "shown": 100, "sampled": true,
 "summary": {"last": 0.12, "min": 0.11, "max": 2.3, "count": 2000, "nonfinite": 0, "last_step": 1999, "min_step": 1870, "max_step": 0},
 "points": [{"seq": 1, "step": 0, "value": 2.3, "elapsed_ms": 12.5}]}
```

**Which runs match a condition?** `--where PATH OP VALUE` with OP one of `=` `!=` `<` `<=` `>` `>=`
`~` (regex search); repeat `--where` to AND conditions. PATH is a field (`name`, `status`, `commit`,
`dirty`, `started`, `replay_of`...), a metadata path, or a metric path (its last value; `<metric>:max`, `:min`,
`:count` for a statistic). A path no run has is an error listing the nearest names. Newest first; at
most 20 runs unless `--limit N` (0 for all); `--sort <path>` or `--sort -<path>` (descending). Each
JSON row has the run's `metadata` and final `metrics` (exact values: use `--json` for thresholds).

```bash
exprag-plus runs --where '<path>>=<value>' --json
```

```json
{"total": 40, "matched": 3, "shown": 3,
 "runs": [{"id": "...", "short_id": "9f8e7d6c", "started": "...", "name": "lr sweep", "status": "completed",
           "commit": "4e1d2c0...", "branch": "main", "dirty": false, "replay_of": null, "metadata": {"hparams": {"lr": 0.1}},
           "metrics": {"metrics.val_acc": 0.93}}]}
```

**Everything about one run** (command, host, code, metadata, error, metric summaries):

```bash
exprag-plus show <run> --json
```

```json
{"id": "...", "short_id": "9f8e7d6c", "started": "...", "ended": "...", "duration_s": 61.2, "name": "lr sweep",
 "status": "failed", "error": {"type": "RuntimeError", "message": "CUDA out of memory", "traceback": "..."},
 "commit": "...", "branch": "run/...", "dirty": true, "metrics": {"metrics.val_acc": 0.91},
 "metadata": {"hparams": {"lr": 0.01}}, "process": {"argv": ["train.py", "--lr", "0.01"], "cwd": "..."},
 "host": {"hostname": "gpu1"}, "git": {"commit": "...", "base_commit": "...", "status": [" M train.py"]},
 "git_error": null, "replay_of": null, "summary": {"metrics.val_acc": {"last": 0.91, "max": 0.93}},
 "records": {"run_start": 1, "track": 20, "run_end": 1, "note": 2}, "path": ".runs/....jsonl",
 "command": {"argv": ["python", "train.py", "--lr", "0.01"], "cwd": "..."}, "exit_code": 1, "signal": null,
 "output": {"file": ".../output.log", "bytes": 5120, "lines": 80, "tail": ["...", "RuntimeError: CUDA out of memory"]},
 "tags": ["keep"], "latest_note": {"time": "...", "kind": "decision", "text": "keep: lr 0.01 beat 0.1"},
 "notes": [{"time": "...", "kind": "hypothesis", "text": "lower lr", "seq": 1}],
 "same_code": {"commit": "86dff22...", "branch": "research"},
 "artifacts": [{"path": "checkpoints/last.pt", "kind": "model", "status": "missing"}], "artifact_scan": {"found": 3, "recorded": 3, "omitted": 0}}
```

**A teammate's run, or one made on another machine (a GPU box, a cluster)?** Runs travel through the
project's git remote. Before answering about a run you do not see in `runs`, fetch them with
`exprag-plus pull` (default remote `origin`; `pull <remote>`, or `pull <folder>` for a runs folder
copied by hand): it adds their run files and brings each run's code, so `show`, `diff`, `restore` and
`replay` work on them. Records two machines appended to one run are merged, nothing dropped.
`exprag-plus push` sends runs to the remote: that is the user's call, never do it without asking.

**Where is the code of a run?** Restore it into a new git worktree: the user's checkout, index and
branches are untouched. The command prints the folder (the run's working subdirectory inside it).

```bash
exprag-plus restore <run>
```

It is a worktree of this repository when it has the run's code. Tell the user the path and that `git worktree remove <path>` deletes it. Never switch the user's checkout without asking. If they ask for it: `exprag-plus restore <run>
--checkout` works only on a clean tree and refuses otherwise; it also refuses (naming them) when it would
overwrite untracked or ignored files: show the user that list; `--force` only on their word.

**How does a run's code differ from another run, or from the current code?** Omit the second run to
compare with the working tree (uncommitted and untracked files included). `--stat` for a file list;
diffs are cut at 2,000 lines unless `--max-lines 0`.

```bash
exprag-plus diff <run> <run2>
```

**Run it again.** Restores the run's code into a worktree (as `restore`: tell the user) and re-runs
its recorded command there; the new run records `replay_of` and both runs' final metrics are printed
side by side. Look first with `--dry-run`.

```bash
exprag-plus replay <run> --dry-run
```

**Post-run actions** (export a model, copy results...) registered during a run: list them, then run one
non-interactively. Its questions are answered with `--set key=value`; to discover them, run it with
`--no-input`: the error names the next key, its label and what it accepts. Add `--set` answers until
it runs. Once every question is answered it executes (no dry run): check its target first. Booleans take
true/false/yes/no. `--code run` imports the action from the run's own commit.

```bash
exprag-plus actions list --json
```

```json
{"runs": 4, "actions": [{"run_id": "...", "short_id": "1322f8d4", "run_name": "sweep", "name": "ExportBestModel",
  "class": "export_best_model:ExportBestModel", "description": "copy the weights",
  "params": {"metric": "metrics.val_acc"}, "registered": "...",
  "times_run": 0, "last_status": null, "last_time": null}]}
```

```bash
exprag-plus actions run <run> <action> --no-input --set <key>=<answer> --json
```

```json
{"run_id": "...", "name": "ExportBestModel", "status": "ok", "answers": {"folder": "out"},
 "result": {"copied_to": "out/model.json"}, "error": null}
```

A missing answer exits 2 with `"status": "error"` and an `error.message` such as `action
'ExportBestModel' needs an answer for 'folder' ("Copy the best model to folder:"): any text; pass
--set folder=...`. `exprag-plus actions show <run> <action>` lists its parameters and past executions.

**Task schemas** (shell commands with declared inputs and outputs): inspect one, then run it as a
recorded run; `--dry-run` prints the commands without running them.

```bash
exprag-plus task info <schema-file>
exprag-plus task run <schema-file> --input <input>=<input-value> --json
```

The second prints `{"run_id", "outputs", "status"}` and records a run. With `--each <input>` (and
`--input <input>=[1,2]`) each element is a run carrying `sweep`, its number outputs tracked:
`best <output> --where sweep=<sweep_id>` ranks them. Commands run in the run's folder: reach project files as
`"$EXPRAG_PROJECT_DIR/train.py"`.
A value a token substitutes must be plain (letters, digits, `_ . / , : @ % + = -`, or a number): other
text exits 2 before anything runs, naming the `"$EXPRAG_PARAM_<input>"` variable the schema's command must
read instead; pass the value as it is and never add shell quotes to it.

**On a Slurm cluster**, add `--slurm` to `task run` (with `--each`, one array task per element;
`--parallel K` runs at most K at once; `--sbatch-arg=--time=60` passes sbatch options): it prints the job
id and a `sweep_id`, freezes the code at submission (later edits never reach queued tasks) and each task
becomes a run carrying `sweep`. Follow it with `exprag-plus sweep status <sweep-id> --json` (counts by
state) and list its runs with `exprag-plus runs --where sweep=<sweep-id>`. Runs
made under Slurm carry `run_start.scheduler` (job_id, array_task_id, partition, nodes, restart_count); a
requeued job continues its run (a `resume` record with `restart_count`), so one task is one run.

**Plots and a report** for the user: `exprag-plus plot <metric> -o <file>.svg` (the latest 10 runs having
the metric, or `--where`, or run ids; x is `step`, else `epoch`) and `exprag-plus report -o <file>.html`.

## Record format (when reading files directly)

One JSON object per line, each with `type`, `run_id`, `seq`, `time` (UTC) and `elapsed_ms`:

```text
{"type":"run_start","run_id":"01a2...","seq":0,"time":"2026-11-24T10:02:11.123456Z","elapsed_ms":41.2,"format":"exprag-plus/1","name":"lr sweep","metadata":{"hparams":{"lr":0.01}},"process":{"pid":4242,"argv":["train.py","--lr","0.01"],"cwd":"/home/u/proj"},"host":{"hostname":"gpu1","platform":"Linux"},"git":{"commit":"b375d40...","branch":"run/01a2...","dirty":true,"status":[" M train.py"],"base_commit":"ebf6040...","toplevel":"/home/u/proj"}}
{"type":"track","run_id":"01a2...","seq":1,"time":"...","elapsed_ms":918.4,"value":{"step":0,"metrics":{"loss":2.3,"val_acc":0.41}},"note":"epoch end"}
{"type":"action","run_id":"01a2...","seq":2,"time":"...","elapsed_ms":950.0,"name":"ExportBestModel","class":"export_best_model:ExportBestModel","params":{"metric":"metrics.val_acc"},"description":"Copy the weights"}
{"type":"task","run_id":"01a2...","seq":3,"time":"...","elapsed_ms":990.2,"index":0,"objective":"t1","inputs":{"p1":1},"outputs":{"p3":3},"status":"ok"}
{"type":"run_end","run_id":"01a2...","seq":4,"time":"...","elapsed_ms":60312.0,"status":"completed","error":null,"summary":{"metrics.val_acc":{"last":0.91,"min":0.41,"max":0.93,"count":20,"nonfinite":0,"last_step":19,"min_step":0,"max_step":14}}}
{"type":"action_run","run_id":"01a2...","seq":5,"time":"...","elapsed_ms":86400000.0,"pid":777,"name":"ExportBestModel","answers":{"folder":"out","overwrite":false},"status":"ok","error":null,"result":{"copied":"out/model.json"},"duration_ms":4.2}
```

Metric paths flatten nested values with dots (`{"metrics": {"loss": 1}}` is `metrics.loss`); a bare
number tracked alone is `value`. `action_run` records are appended later, after `run_end`.

Without the CLI, read `.runs/*.jsonl` with `jq` or Python. A crashed run has no `run_end`: its last
values are in its last `track` record.

```bash
jq -c 'select(.type=="run_end") | {run_id, status, summary}' .runs/*.jsonl
jq -c 'select(.type=="track") | {run_id, seq, value}' .runs/*.jsonl | tail -n 3
```

## Gotchas

- Statuses: `completed`, `failed` (an exception, or a `run` command's exit code or signal: see `error`), `interrupted`
  (Ctrl-C), `running` (no `run_end`, process alive on this host), `crashed` (no `run_end`, process
  gone: killed or out of memory; its metrics come from its track records).
- Non-finite floats are stored as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`, also in `--json`
  output. A `last` of `"NaN"` means the run diverged; `min`/`max` cover finite values only.
- Code state: for a clean tree `commit` is HEAD and `branch` the branch it was on (which may have moved
  since: use `commit`). For a dirty tree `commit` is a snapshot commit on `run/<run_id>` (edits and
  untracked files included), `base_commit` its parent (the HEAD it started from), `branch` is
  `run/<run_id>` (pulled: `refs/exprag-plus/runs/<run_id>`). `commit: null` with `git_error` means no snapshot could be made.
- `best` ranks by best value, not final value, unless `--final`. Say which when you answer.
- `***` in argv, metadata or a task record is a credential redacted at write time: it cannot be
  recovered, so never ask for it; `replay` refuses such a command line. A text `\xff` in a path or
  argv is a byte that was not UTF-8, and `{"__int__": "..."}` an integer too long for JSON.
- Outputs are bounded: `runs` 20 rows, `progress` new bests and the latest 50 (`--limit 0`),
  `history` 100 points (`--max-points 0`), `diff` 2,000 lines (`--max-lines 0`); stderr says when
  something was cut.
- Never modify `.runs/*.jsonl` by hand, never delete `run/*` branches yourself (`exprag-plus gc` removes
  only the snapshots it made whose runs are gone; `gc --dry-run` first), and never switch the user's checkout without asking.
- MCP: `exprag-plus mcp --install claude` (or `codex`, `cursor`) prints the registration.
"""


class SkillExists(ValueError):
    """The target holds a different SKILL.md (perhaps edited by the user)."""


def render() -> str:
    """The whole SKILL.md: frontmatter with only the spec's keys, then the body."""
    fields = {"name": NAME, "description": DESCRIPTION, "license": "MIT",
              "compatibility": "Needs the exprag-plus command (pip install exprag-plus) and git; Python 3.9+."}
    # A JSON string is a valid YAML double-quoted scalar: a `: ` or `#` in a value cannot break the parse.
    front = ["---"] + [f"{key}: {json.dumps(value)}" for key, value in fields.items()] + ["---"]
    return "\n".join(front) + "\n" + BODY.lstrip("\n")


def install_paths(top: str, which: str = "all") -> List[str]:
    """Where `--install` writes for each agent family, under the repository top level."""
    if which == "all":
        return [os.path.join(top, p) for p in TARGETS.values()]
    if which not in TARGETS:
        raise ValueError(f"unknown install target {which!r}; use one of {', '.join(TARGETS)} or all")
    return [os.path.join(top, TARGETS[which])]


def write(path: str, force: bool = False, text: Optional[str] = None) -> Dict[str, str]:
    """Write SKILL.md to a file path, or into a folder (as SKILL.md); create parents.

    An existing different file is kept unless `force`: the user may have edited it.
    """
    text = render() if text is None else text
    if os.path.isdir(path) or path.endswith(os.sep) or not path.endswith(".md"):
        path = os.path.join(path, "SKILL.md")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            current = f.read()
        if current == text:
            return {"path": path, "status": "unchanged"}
        if not force:
            raise SkillExists(f"{path} exists and differs from this version's skill; pass --force to replace it")
    write_atomic(path, text)
    return {"path": path, "status": "written"}
