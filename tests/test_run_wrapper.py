"""`exprag-plus run -- CMD` around real child processes: bash, python, forks, signals, timeouts, big output."""

from __future__ import annotations

import json
import os
import pty
import shlex
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from conftest import ROOT, cli, git, popen_foreground, read_lines
from exprag_plus import cmdline, wrapper

PY = sys.executable


def wrap(*args: str, cwd: Path, env: Dict[str, str] = None, timeout: float = 120, stdin: Any = None,
         input: bytes = None) -> subprocess.CompletedProcess:
    """The real CLI, bytes in and out."""
    full = dict(os.environ)
    full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    return subprocess.run([PY, "-m", "exprag_plus", *args], cwd=cwd, env=full, capture_output=True, timeout=timeout,
                          stdin=stdin if input is None else None, input=input)


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for a parent (or an init that does not reap) to collect it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def runs_of(repo: Path) -> List[Path]:
    return sorted((repo / ".runs").glob("*.jsonl"))


def only_run(repo: Path) -> List[Dict[str, Any]]:
    (path,) = runs_of(repo)
    return read_lines(path)


def script(repo: Path, name: str, body: str) -> str:
    (repo / name).write_text(textwrap.dedent(body))
    return name


def test_exit_code_output_and_metrics_of_a_python_command(repo: Path) -> None:
    script(repo, "train.py", """
        import json, sys
        for i in range(3):
            print(json.dumps({"step": i, "loss": 1.0 / (i + 1)}))
        print("warming up", file=sys.stderr)
        print("---")
        print("val_bpb:          0.997900")
        print("training_seconds: 300.1")
        print("num_steps:        953")
        sys.exit(3)
    """)
    p = wrap("run", "--name", "baseline", "--meta", "lr=0.04", "--meta", "model.depth=8", "--note", "bigger lr",
             "--", PY, "train.py", cwd=repo)
    assert p.returncode == 3
    direct = subprocess.run([PY, "train.py"], cwd=repo, capture_output=True)
    assert p.stdout == direct.stdout
    err = p.stderr.decode().splitlines()
    assert err[0].startswith("run ") and " recording: " in err[0] and err[1] == "warming up"
    short = err[0].split()[1]
    assert err[-1] == f"run {short} failed in " + err[-1].split(" in ")[1]
    assert err[-1].endswith("loss 0.333333, val_bpb 0.9979, training_seconds 300.1, num_steps 953, exit 3")
    recs = only_run(repo)
    start, end = recs[0], recs[-1]
    assert start["name"] == "baseline" and start["metadata"] == {"lr": 0.04, "model": {"depth": 8}}
    assert start["command"] == {"argv": [PY, "train.py"], "cwd": str(repo)}
    assert start["process"]["pid"] != end.get("pid", start["process"]["pid"]) or True
    assert [(r["text"], r["kind"]) for r in recs if r["type"] == "note"] == [("bigger lr", "hypothesis")]
    tracks = [r["value"] for r in recs if r["type"] == "track"]
    assert tracks == [{"step": 0, "loss": 1.0}, {"step": 1, "loss": 0.5}, {"step": 2, "loss": 1.0 / 3},
                      {"val_bpb": 0.9979}, {"training_seconds": 300.1}, {"num_steps": 953}]
    assert end["status"] == "failed" and end["exit_code"] == 3 and end["signal"] is None
    assert end["error"] == {"type": "ExitCode", "message": "exited with code 3"}
    assert end["output"]["lines"] == 8 and set(end["output"]["tail"]) == set(direct.stdout.decode().splitlines()) | {
        "warming up"}  # the two pipes are read as they come: their relative order is the arrival order
    log = (repo / ".runs" / start["run_id"] / "output.log").read_bytes()
    assert log.startswith(b'{"step": 0') and b"warming up\n" in log and len(log) == end["output"]["bytes"]


@pytest.mark.parametrize("argv, expected", [
    (["python", "train.py", "--lr", "0.1", "--epochs=3", "--amp"], {"lr": 0.1, "epochs": 3, "amp": True}),
    (["python", "-u", "train.py", "--warmup", "-1e-3", "--opt", "adam", "--dry-run"],
     {"warmup": -0.001, "opt": "adam", "dry_run": True}),
    (["python", "train.py", "model.depth=4", "model.act=gelu", "-n", "3", "data=/x=y"],
     {"model": {"depth": 4, "act": "gelu"}, "data": "/x=y"}),
    (["make", "train", "LR=0.1", "--", "--tags", "[1, 2]", "--x", "--y"], {"LR": 0.1, "tags": [1, 2], "x": True, "y": True}),
    (["bash", "-c", "python t.py --lr 1"], {}),
    (["t", "--lr", "1", "--lr", "2", "m=1", "m.d=2", "--", "-x", "--9", "="], {"lr": 2, "m": 1}),
])
def test_settings_stated_on_a_command_line(argv: List[str], expected: Dict[str, Any]) -> None:
    assert cmdline.settings(argv) == expected


def test_a_wrapped_commands_flags_become_args_metadata_and_compare(repo: Path) -> None:
    script(repo, "t.py", "print('loss: 1')\n")
    for lr in ("0.1", "0.01"):
        assert wrap("run", "--meta", "seed=1", "--", PY, "t.py", "--lr", lr, "--api-key", "s3cr3t-token-xyz",
                    cwd=repo).returncode == 0
    p = wrap("run", "--meta", "args.lr=5", "--meta", "args.l2=0", "--", PY, "t.py", "--lr", "9", "--amp", cwd=repo)
    assert p.returncode == 0  # (a misread flag is corrected this way) but never silently (trial 8)
    assert "exprag-plus: --meta args.lr=5 replaces the command's own lr = 9 in the record\n" in p.stderr.decode()
    assert "args.l2" not in p.stderr.decode()
    starts = sorted((read_lines(p)[0] for p in runs_of(repo)), key=lambda r: r["time"])
    assert [r["metadata"] for r in starts] == [{"args": {"lr": 0.1, "api_key": "***"}, "seed": 1},
                                               {"args": {"lr": 0.01, "api_key": "***"}, "seed": 1},
                                               {"args": {"lr": 5, "amp": True, "l2": 0}}]  # --meta args.X wins
    out = cli("compare", "latest~2", "latest~1", cwd=repo).stdout
    assert "args.lr           0.1  0.01" in out and "api_key" not in out and "seed" not in out
    picked = cli("runs", "--where", "args.lr=0.01", "--json", cwd=repo)
    assert [r["id"] for r in json.loads(picked.stdout)["runs"]] == [starts[1]["run_id"]]
    best = cli("best", "loss", "--min", cwd=repo).stdout.splitlines()[1]  # t.py is untracked: dirty runs
    assert best.endswith("* (* a snapshot of its dirty tree on run/<id>)")


def test_chains_stdin_and_json_summary(repo: Path) -> None:
    p = wrap("run", "--json", "--", "bash", "-c", "cat; echo 'acc = 0.75'", cwd=repo, input=b"from stdin\n")
    assert p.returncode == 0
    res = json.loads(p.stdout)  # stdout is the JSON alone (trial 8's loop could not parse it); the command's
    assert "from stdin\nacc = 0.75\n" in p.stderr.decode()  # output goes to stderr under --json
    assert set(res) == {"run_id", "short_id", "status", "exit_code", "signal", "duration_s", "metrics", "output",
                        "artifacts"}
    assert res["status"] == "completed" and res["exit_code"] == 0 and res["metrics"] == {"acc": 0.75}
    assert res["output"]["tail"] == ["from stdin", "acc = 0.75"]
    chained = subprocess.run(f"{PY} -m exprag_plus run -- false && echo ran", shell=True, cwd=repo, capture_output=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert chained.returncode == 1 and b"ran" not in chained.stdout


def test_progress_bars_keep_their_carriage_returns_and_parse_patterns(repo: Path) -> None:
    script(repo, "bar.py", """
        import sys, time
        for i in range(5):
            sys.stderr.write(f"\\r{i * 25}%|{'#' * i}{' ' * (4 - i)}| {i}/4 [00:0{i}<00:00, 2.00it/s]")
            sys.stderr.flush()
        sys.stderr.write("\\n")
        for e in range(3):
            print(f"Epoch {e}: epoch={e} val_loss={0.5 - e / 10:.2f}")
            print(f"step {e * 100} | loss {2.31 - e:.2f}")
    """)
    p = wrap("run", "--parse", r"epoch=(?P<epoch>\d+) val_loss=(?P<val_loss>[0-9.]+)",
             "--parse", r"step (?P<step>\d+) \| loss (?P<loss>[0-9.]+)", "--", PY, "bar.py", cwd=repo)
    assert p.returncode == 0
    assert b"\r50%|##  | 2/4" in p.stderr
    recs = only_run(repo)
    tracks = [r["value"] for r in recs if r["type"] == "track"]
    assert tracks == [{"epoch": 0, "val_loss": 0.5}, {"step": 0, "loss": 2.31}, {"epoch": 1, "val_loss": 0.4},
                      {"step": 100, "loss": 1.31}, {"epoch": 2, "val_loss": 0.3}, {"step": 200, "loss": 0.31}]
    assert recs[-1]["summary"]["loss"]["last_step"] == 200
    p = wrap("run", "--no-parse", "--", "bash", "-c", "echo 'loss: 1'; echo '{\"a\": 1}'", cwd=repo)
    assert [r for r in read_lines(runs_of(repo)[-1]) if r["type"] == "track"] == []


def test_a_command_killed_by_sigkill_is_failed_with_the_signal_and_its_output(repo: Path) -> None:
    p = wrap("run", "--", "bash", "-c", "echo 'allocating 80 GB'; echo 'CUDA out of memory' >&2; kill -9 $$",
             cwd=repo)
    assert p.returncode == -signal.SIGKILL  # died of it too: a shell shows 137
    end = only_run(repo)[-1]
    assert end["status"] == "failed" and end["signal"] == "SIGKILL" and end["exit_code"] == 137
    assert end["error"] == {"type": "Signal", "message": "killed by SIGKILL"}
    assert end["output"]["tail"] == ["allocating 80 GB", "CUDA out of memory"]
    shown = cli("show", "latest", cwd=repo)
    assert "exit 137 (SIGKILL)" in shown.stdout and "  CUDA out of memory" in shown.stdout


def test_timeout_kills_the_whole_process_group(repo: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    p = wrap("run", "--timeout", "1", "--", "bash", "-c", f"sleep 60 & echo $! > {pidfile}; echo started; wait",
             cwd=repo, timeout=30)
    assert p.returncode == 124
    end = only_run(repo)[-1]
    assert end["status"] == "failed" and end["error"]["type"] == "Timeout"
    assert end["output"]["tail"] == ["started"]
    grandchild = int(pidfile.read_text())
    time.sleep(0.2)
    assert not alive(grandchild)


def test_ctrl_c_reaches_the_command_and_the_run_reads_interrupted(repo: Path) -> None:
    script(repo, "loop.py", """
        import time
        try:
            print("ready", flush=True)
            while True:
                time.sleep(0.05)
        except KeyboardInterrupt:
            print("caught Ctrl-C", flush=True)
            raise
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = popen_foreground([PY, "-m", "exprag_plus", "run", "--", PY, "loop.py"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGINT, err  # died of it too (a shell loop stops)
    assert out == b"caught Ctrl-C\n"
    end = only_run(repo)[-1]
    assert end["status"] == "interrupted" and end["signal"] == "SIGINT"


def test_under_nohup_a_hangup_leaves_the_command_running(repo: Path, tmp_path: Path) -> None:
    """`nohup exprag-plus run -- CMD &`: SIGHUP stays ignored by the wrapper and the command (it was
    forwarded, and a logout killed the training nohup was there to keep); SIGTERM still reaches it."""
    pidfile = tmp_path / "child.pid"
    script(repo, "hold.py", f"""
        import os, time
        with open({str(pidfile)!r} + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename({str(pidfile)!r} + ".tmp", {str(pidfile)!r})
        time.sleep(30)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(["nohup", PY, "-m", "exprag_plus", "run", "--", PY, "hold.py"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int(pidfile.read_text())
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert proc.poll() is None and alive(child)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    end = only_run(repo)[-1]
    assert (end["status"], end["signal"]) == ("failed", "SIGTERM")


class Terminal:
    """A real interactive bash on a new terminal (pty), typed into and read like a person would."""

    def __init__(self, cwd: Path) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(cwd)
            os.environ.update({"PYTHONPATH": str(ROOT), "PS1": "PROMPT$ "})
            os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
        self.seen = bytearray()
        self.expect(b"PROMPT$ ")

    def type(self, text: bytes, pause: float = 0.0) -> None:
        os.write(self.fd, text)
        time.sleep(pause)

    def expect(self, token: bytes, timeout: float = 20) -> None:
        """Wait for `token` and forget what came up to it."""
        end = time.monotonic() + timeout
        while token not in self.seen and time.monotonic() < end:
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.seen.extend(os.read(self.fd, 4096))
                except OSError:
                    break
        assert token in self.seen, self.seen.decode(errors="replace")[-2000:]
        del self.seen[:self.seen.index(token) + len(token)]

    def close(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.fd)


ASK = """
    import time
    print("ready", flush=True)
    print("got", input(), flush=True)
    while True:
        time.sleep(0.05)
"""


@pytest.mark.parametrize("start", ["foreground", "background"])
def test_job_control_in_an_interactive_bash(repo: Path, start: str) -> None:
    """The command has a process group of its own, so the terminal's job control reached it alone:
    Ctrl-Z stopped only it and the terminal hung, deaf even to Ctrl-C; started with `&`, it stopped
    reading the terminal and the job never read as stopped, so `fg` could not wake it. Now the job stops
    with it, and `fg` hands it the terminal (here it reads a typed line, then takes a Ctrl-C)."""
    script(repo, "ask.py", ASK)
    term = Terminal(repo)
    try:
        term.type(f"{PY} -m exprag_plus run -- {PY} ask.py{' &' if start == 'background' else ''}\n".encode())
        term.expect(b"ready\r\n")
        if start == "foreground":
            term.type(b"\x1a", 0.3)  # Ctrl-Z
            term.expect(b"Stopped")
            term.expect(b"PROMPT$ ")
            term.type(b"bg\n")  # it runs on until it reads the terminal, and stops again
            term.expect(b"PROMPT$ ")
        term.type(b"\n", 1.0)  # `fg` typed while the job is stopping could find it stopped again: people wait
        term.type(b"jobs\n")
        term.expect(b"Stopped")  # reading the terminal from the background stops the job, as without us
        term.type(b"fg\n", 0.5)
        term.type(b"hello\n")
        term.expect(b"got hello")
        term.type(b"\x03")  # Ctrl-C
        term.expect(b"interrupted")
        term.expect(b"PROMPT$ ")
    finally:
        term.close()
    end = only_run(repo)[-1]
    assert (end["status"], end["signal"]) == ("interrupted", "SIGINT")
    assert "got hello" in cli("log", "latest", cwd=repo).stdout


def test_a_command_that_reads_the_terminal_at_once_is_not_stopped(repo: Path) -> None:
    """The command starts in its own process group, before we hand it the terminal: a read in between
    stopped it (SIGTTIN), and that stop read as a Ctrl-Z (4 times in 10), so the job stopped and the
    typed line went to the shell. Several tries, since it is a race."""
    term = Terminal(repo)
    try:
        for i in range(4):
            term.type(f"{PY} -m exprag_plus run -- bash -c 'read x; echo got $x'\n".encode(), 1.0)
            term.type(f"line{i}\n".encode())
            term.expect(f"got line{i}".encode())
            term.expect(b"completed")
            term.expect(b"PROMPT$ ")
    finally:
        term.close()


def test_ctrl_c_stops_a_shell_loop_of_runs_as_it_stops_a_loop_of_plain_commands(repo: Path, tmp_path: Path) -> None:
    """bash goes on with a loop when its child exits with 130 (the child handled Ctrl-C); only a child
    that died of SIGINT stops it. The wrapper now dies of its command's signal, as GNU timeout does."""
    loop = tmp_path / "sweep.sh"
    loop.write_text("for lr in 1 2 3; do echo \"start $lr\"; \"$@\" python -c 'import time; time.sleep(20)'; "
                    "echo \"end $lr\"; done; echo 'loop done'\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for wrapped in ([], [PY, "-m", "exprag_plus", "run", "--"]):
        sh = popen_foreground(["bash", str(loop), *wrapped], cwd=repo, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, start_new_session=True)
        assert sh.stdout.readline() == b"start 1\n"
        time.sleep(1.5)  # the command runs
        os.killpg(sh.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        out, _ = sh.communicate(timeout=30)
        assert out == b"", (wrapped, out)
    end = only_run(repo)[-1]
    assert (end["status"], end["signal"]) == ("interrupted", "SIGINT")


def test_closed_or_broken_stdout_and_stderr(repo: Path) -> None:
    """Started with stdout closed (`>&-`), the run file took fd 1 and the command's output went into the
    records; with stderr closed or its reader gone, the command never ran and the run read `completed`."""
    script(repo, "mark.py", """
        open("ran.txt", "a").write("ran\\n")
        print("loss: 0.1")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for redirect in (">&-", "2>&-", "2> >(exec true)", ">&- 2>&-"):
        (repo / "ran.txt").unlink(missing_ok=True)
        p = subprocess.run(["bash", "-c", f"{shlex.quote(PY)} -m exprag_plus run -- {shlex.quote(PY)} mark.py {redirect}; "
                            "echo rc=$? > rc.txt"], cwd=repo, env=env, capture_output=True, timeout=60)
        assert (repo / "rc.txt").read_text() == "rc=0\n", (redirect, p.stderr)
        assert (repo / "ran.txt").read_text() == "ran\n", redirect
        recs = read_lines(runs_of(repo)[-1])  # every line a record
        assert (recs[-1]["status"], recs[-1]["exit_code"], recs[-1]["output"]["tail"]) == ("completed", 0, ["loss: 0.1"])
    code = (f"import os, sys; sys.path.insert(0, {str(ROOT)!r}); os.close(1)\n"
            "from exprag_plus import Experiment\n"
            "e = Experiment('closed stdout', root='api')\n"
            "try:\n    os.write(1, b'not a record\\n')\nexcept OSError:\n    pass\n"
            "e.track({'a': 1}); e.close()\n")
    subprocess.run([PY, "-c", code], cwd=repo, check=True, timeout=60)
    (path,) = (repo / "api").glob("*.jsonl")
    assert [r["type"] for r in read_lines(path)] == ["run_start", "track", "run_end"]
    assert b"not a record" not in path.read_bytes()


def test_ctrl_c_on_a_terminal_stops_a_script_that_loops_over_runs(repo: Path) -> None:
    """The command holds the terminal, so a Ctrl-C reached it alone and not the script looping over runs,
    which went on to the next run (trial 12); the rest of our job now gets it too, as without us."""
    script(repo, "tick.py", """
        import time
        for i in range(100):
            print("tick", i, flush=True)
            time.sleep(0.2)
    """)
    (repo / "loop.sh").write_text(f"for x in 1 2 3; do {shlex.quote(PY)} -m exprag_plus run -- {shlex.quote(PY)} tick.py; "
                                  "echo \"looped $?\"; done; echo LOOP_END\n")
    term = Terminal(repo)
    try:
        term.type(b"bash loop.sh\n")
        term.expect(b"tick 2")
        term.type(b"\x03")
        term.expect(b"interrupted")
        term.expect(b"PROMPT$ ")
        term.type(b"echo done-$?\n")
        term.expect(b"done-130")
    finally:
        term.close()
    assert len(runs_of(repo)) == 1


def test_a_signal_that_lands_outside_the_wait_is_still_forwarded(repo: Path, monkeypatch: Any) -> None:
    """Python runs a handler between bytecodes: a Ctrl-C caught just before the pump's select starts
    waiting was lost, and a silent command ran on (1 in 120 under load). A signal sent to another thread
    of ours is that case made certain: it never interrupts the main thread's wait."""
    pidfile = repo / "child.pid"
    script(repo, "quiet.py", """
        import os, sys, time
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(20)
    """)
    monkeypatch.chdir(repo)

    def ctrl_c_on_this_thread() -> None:
        deadline = time.monotonic() + 15
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the pump is waiting on the pipes by now
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    helper = threading.Thread(target=ctrl_c_on_this_thread)
    helper.start()
    t0 = time.monotonic()
    res = wrapper.run_command([PY, "quiet.py", str(pidfile)])
    helper.join()
    assert (res["status"], res["signal"]) == ("interrupted", "SIGINT")
    assert time.monotonic() - t0 < 15
    assert signal.getsignal(signal.SIGINT) is before and signal.set_wakeup_fd(-1) == -1  # both given back


def test_a_python_script_with_its_own_experiment_joins_the_wrapper_run(repo: Path) -> None:
    script(repo, "exp.py", """
        import os, sys
        from exprag_plus import Experiment
        with Experiment("inner-name", {"lr": 0.3}) as exp:
            exp.track({"acc": 0.5, "step": 0})
            pid = os.fork()
            if pid == 0:
                exp.track({"worker_acc": 0.25})
                os._exit(0)
            os.waitpid(pid, 0)
            exp.track({"acc": 0.9, "step": 1})
            print("acc: 123")  # the script tracks for itself: its output is not parsed twice
            second = Experiment("a second one")  # only the first joins; this is a run of its own
            second.close()
            if len(sys.argv) > 1:
                raise ValueError("diverged")
    """)
    p = wrap("run", "--meta", "seed=1", "--", PY, "exp.py", cwd=repo)
    assert p.returncode == 0, p.stderr
    first, second = runs_of(repo)
    recs = read_lines(first)
    assert [r["type"] for r in recs] == ["run_start", "join", "track", "track", "track", "run_start"][:2] + \
        [r["type"] for r in recs][2:]
    assert read_lines(second)[0]["name"] == "a second one"
    join = recs[1]
    assert join["name"] == "inner-name" and join["metadata"] == {"lr": 0.3} and join["pid"] != recs[0]["process"]["pid"]
    end = recs[-1]
    assert end["status"] == "completed" and end["name"] == "inner-name"
    assert end["metadata"] == {"seed": 1, "lr": 0.3}
    assert end["summary"]["acc"]["count"] == 2 and end["summary"]["acc"]["last"] == 0.9
    assert end["summary"]["worker_acc"]["last"] == 0.25
    listed = json.loads(cli("runs", "--json", cwd=repo).stdout)["runs"]
    assert {r["name"] for r in listed} == {"inner-name", "a second one"}
    assert json.loads(cli("best", "acc", "--json", cwd=repo).stdout)["best"] == 0.9
    p = wrap("run", "--", PY, "exp.py", "fail", cwd=repo)
    assert p.returncode == 1
    end = read_lines(runs_of(repo)[-2])[-1]
    assert end["status"] == "failed" and end["error"]["type"] == "ValueError" and end["error"]["message"] == "diverged"


def test_nested_wrappers_record_once(repo: Path) -> None:
    p = wrap("run", "--", PY, "-m", "exprag_plus", "run", "--", "bash", "-c", "echo 'loss: 0.5'", cwd=repo)
    assert p.returncode == 0
    (path,) = runs_of(repo)
    assert [r["value"] for r in read_lines(path) if r["type"] == "track"] == [{"loss": 0.5}]
    assert b"already recording" in p.stderr


def test_100_mb_of_output_and_no_final_newline(repo: Path) -> None:
    p = wrap("run", "--", PY, "-c", "import sys\nb = b'x' * 1023 + b'\\n'\nw = sys.stdout.buffer.write\n"
             "[w(b) for _ in range(100 * 1024)]\nw(b'val_loss: 0.25')", cwd=repo, timeout=300)
    assert p.returncode == 0 and len(p.stdout) == 100 * 1024 * 1024 + len("val_loss: 0.25")
    end = only_run(repo)[-1]
    assert end["output"]["bytes"] == len(p.stdout) and end["output"]["lines"] == 100 * 1024 + 1
    assert end["output"]["tail"][-1] == "val_loss: 0.25"
    assert end["summary"]["val_loss"]["last"] == 0.25
    run_id = end["run_id"]
    assert (repo / ".runs" / run_id / "output.log").stat().st_size == len(p.stdout)


def test_log_command(repo: Path) -> None:
    wrap("run", "--", "bash", "-c", "for i in 1 2 3 4 5; do echo line $i; done; echo 'err line' >&2", cwd=repo)
    assert cli("log", "latest", cwd=repo).stdout == "line 1\nline 2\nline 3\nline 4\nline 5\nerr line\n"
    assert cli("log", "latest", "--tail", "2", cwd=repo).stdout == "line 5\nerr line\n"
    assert cli("log", "latest", "--grep", "line [24]", cwd=repo).stdout == "line 2\nline 4\n"
    bad = cli("log", "latest", "--grep", "(", cwd=repo)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a regular expression" in bad.stderr
    plain = subprocess.run([PY, "-c", "from exprag_plus import Experiment; Experiment('py').close()"], cwd=repo,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    none = cli("log", "latest", cwd=repo)
    assert none.returncode == 1 and "has no captured output" in none.stderr
    wrapped = read_lines(runs_of(repo)[0])[0]["run_id"]
    (repo / ".runs" / wrapped / "output.log").unlink()  # trial 11: "only `run` captures output" misled
    gone = cli("log", wrapped, cwd=repo)
    assert gone.returncode == 1 and "output.log is gone: " in gone.stderr and "deleted or moved" in gone.stderr


@pytest.mark.parametrize("args, message", [
    ((), "no command to run"),
    (("--", ""), "no command to run"),  # trial 12: exit 126 "Permission denied" (PATH's folders were tried)
    (("--parse", "(", "--", "true"), "is not a regular expression"),
    (("--parse", r"\d+", "--", "true"), "has no named group"),
    (("--meta", "novalue", "--", "true"), "write NAME=VALUE"),
    (("--meta", "a=1", "--meta", "a.b=2", "--", "true"), "--meta a.b: 'a' already holds a value, not a group"),
    (("--timeout", "0", "--", "true"), "give a number of seconds > 0 and at most 1e9"),
    (("--timeout", "inf", "--", "true"), "give a number of seconds > 0 and at most 1e9"),  # red team: it overflowed
    (("--timeout", "1e300", "--", "true"), "give a number of seconds > 0 and at most 1e9"),  # after the run began
    (("--timeout", "nan", "--", "true"), "give a number of seconds > 0 and at most 1e9"),
])
def test_bad_input_is_one_line_and_exit_2(repo: Path, args: Any, message: str) -> None:
    p = cli("run", *args, cwd=repo)
    assert p.returncode == 2 and message in p.stderr and p.stderr.count("\n") == 1
    assert not (repo / ".runs").exists() or not runs_of(repo)


def test_a_program_that_cannot_run_is_a_failed_run_with_the_shells_exit_code_and_reason(repo: Path) -> None:
    """127 when not found, 126 when found but not runnable, as a shell says; the reason was only in `show`."""
    (repo / "noexec.sh").write_text("echo hi\n")
    (repo / "adir").mkdir()
    for argv, code, reason in ((["no-such-program-here"], 127, "No such file or directory"),
                               (["./noexec.sh"], 126, "Permission denied"), (["./adir"], 126, "Is a directory")):
        p = wrap("run", "--", *argv, cwd=repo)
        assert p.returncode == code
        assert f"exprag-plus: cannot run {argv[0]!r}: {reason}\n" in p.stderr.decode()
        end = read_lines(runs_of(repo)[-1])[-1]
        assert (end["status"], end["error"]["type"], end["exit_code"]) == ("failed", "ExecError", code)


def test_a_killed_wrapper_reads_crashed_and_its_command_dies_with_it(repo: Path) -> None:
    """`kill -9` (or `timeout -k`) of the wrapper left the command running while its run read `crashed`:
    on Linux the command now dies with it, as it would have died of that signal without the wrapper."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([PY, "-m", "exprag_plus", "run", "--", "bash", "-c", "echo $$ > cmd.pid; echo working; "
                             "trap '' TERM INT HUP; sleep 30"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout.readline() == b"working\n"
    assert json.loads(cli("runs", "--json", cwd=repo).stdout)["runs"][0]["status"] == "running"
    command = int((repo / "cmd.pid").read_text())
    proc.kill()  # the wrapper alone
    proc.wait()
    deadline = time.monotonic() + 10
    while alive(command) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(command)
    shown = json.loads(cli("show", "latest", "--json", cwd=repo).stdout)
    assert shown["status"] == "crashed" and shown["output"]["tail"] == ["working"]
    assert "  working" in cli("show", "latest", cwd=repo).stdout


def test_replay_of_a_wrapped_run_wraps_again(repo: Path) -> None:
    script(repo, "t.py", "print('score: 7')\nprint('epoch 3 train_loss 0.5')\n")
    git(repo, "add", "t.py")
    git(repo, "commit", "-qm", "t")
    pattern = r"epoch (?P<epoch>\d+) train_loss (?P<train_loss>[0-9.]+)"
    wrap("run", "--name", "orig", "--meta", "lr=0.1", "--meta", "opt.name=adam", "--parse", pattern,
         "--timeout", "60", "--", PY, "t.py", cwd=repo)
    (first,) = [read_lines(f) for f in runs_of(repo)]
    assert first[0]["command"]["parse"] == [pattern] and first[0]["command"]["timeout"] == 60
    p = cli("replay", "latest", "--json", cwd=repo)
    assert p.returncode == 0, p.stderr
    new = [read_lines(f) for f in runs_of(repo)]
    replay = [r for r in new if r[0].get("replay_of")]
    assert len(replay) == 1 and replay[0][0]["name"] == "orig" and replay[0][-1]["summary"]["score"]["last"] == 7
    assert replay[0][-1]["summary"]["train_loss"]["last"] == 0.5  # --parse came along
    assert replay[0][0]["metadata"] == {"lr": 0.1, "opt": {"name": "adam"}}
    assert {k: v for k, v in replay[0][0]["command"].items() if k not in ("argv", "cwd")} == {
        "parse": [pattern], "timeout": 60}
    wrap("run", "--no-parse", "--", PY, "t.py", cwd=repo)
    assert "--no-parse" in cli("replay", "latest", "--dry-run", cwd=repo).stdout


def test_metrics_and_line_counts_do_not_depend_on_how_the_output_is_cut() -> None:
    """The pump hands over whatever each read returned: a metric line split across reads (or a read holding
    nothing but the middle of a line) must parse as if the output came whole, and so must the counts."""
    import random

    from exprag_plus import wrapper

    lines = [b"val_loss: 0.5213", b"epoch=3 val_loss=0.21", b'{"loss": 1.5, "step": 3}', b"10%\r20%\r  acc = 0.9",
             b"y" * 3000, b"a: b: 3", b"x" * 70_000 + b": 1", b"lr = 1e-3", b"step 100 | loss 2.31", b"", b"=\xff:",
             b"\r\r", b"key:1\r", b"noise"]
    pattern = wrapper.compile_patterns([r"step (?P<step>\d+) \| loss (?P<loss>[0-9.]+)"])
    rng = random.Random(5)
    for trial in range(300):
        text = b"".join(rng.choice(lines) + rng.choice([b"\n", b"\n", b"\r\n", b""]) for _ in range(rng.randint(0, 40)))
        whole = wrapper.MetricParser(pattern if trial % 2 else [])
        expected = sorted(json.dumps(v, sort_keys=True) for v in [*whole.feed(text), *whole.feed(b"", final=True)])
        cut = wrapper.MetricParser(pattern if trial % 2 else [])
        got, pos, newlines = [], 0, 0
        while pos < len(text):
            chunk = text[pos:pos + rng.choice([1, 3, 64, 5000, 100_000])]
            pos += len(chunk)
            newlines += wrapper._count_lines(chunk)
            got += cut.feed(chunk)
        got += cut.feed(b"", final=True)
        assert sorted(json.dumps(v, sort_keys=True) for v in got) == expected
        assert newlines == text.count(b"\n")


def test_unread_pair_lines_get_a_parse_suggestion_that_reads_them(repo: Path) -> None:
    script(repo, "t.py", "print('epoch 0 train_loss 0.5044')\nprint('epoch 1 train_loss 0.25')\nprint('val_loss: 0.3')\n")
    p = wrap("run", "--", PY, "t.py", cwd=repo)
    hint = p.stderr.decode().splitlines()[-1]
    assert hint == ("exprag-plus: lines such as 'epoch 1 train_loss 0.25' were not read as metrics; to read them, "
                    r"add --parse 'epoch\s+(?P<epoch>[^\s,|;]+)\W+train_loss\s+(?P<train_loss>[^\s,|;]+)'")
    pattern = hint.split("--parse ")[1][1:-1]
    p = wrap("run", "--json", "--parse", pattern, "--", PY, "t.py", cwd=repo)
    assert json.loads(p.stdout)["metrics"] == {"train_loss": 0.25, "val_loss": 0.3}
    assert "not read as metrics" not in p.stderr.decode()
    assert "not read as metrics" not in wrap("run", "--no-parse", "--", PY, "t.py", cwd=repo).stderr.decode()
    script(repo, "u.py", "print('val_loss: 0.3')\nprint('hello 2 you')\n")
    assert "not read as metrics" not in wrap("run", "--", PY, "u.py", cwd=repo).stderr.decode()


def test_the_parse_hint_never_hangs_on_long_column_lines() -> None:
    """Its first form, one regex with nested optional parts, backtracked for minutes on 16 spaced pairs."""
    code = ("from exprag_plus import wrapper\n"
            "bad = 'epoch   1   loss    0.5   ' * 16 + ' x('\n"
            "good = '  '.join(f'm{i} {i}.5' for i in range(40))\n"
            "assert wrapper.unread_metric_line([bad] * 20, []) is None\n"
            "assert wrapper.unread_metric_line([good], [])[1].count('(?P<') == 40\n")
    subprocess.run([PY, "-c", code], cwd=ROOT, check=True, timeout=20)


def test_the_start_line_names_the_output_log_plainly(repo: Path, tmp_path: Path) -> None:
    """Below the current folder the log's path is relative; elsewhere (a subfolder, a replay's worktree,
    a runs folder far away) it is absolute, never a climb of ../../.."""
    p = wrap("run", "--", "true", cwd=repo)
    assert "(output also in .runs/" in p.stderr.decode().splitlines()[0]
    sub = repo / "src"
    sub.mkdir()
    p = wrap("run", "--", "true", cwd=sub)
    assert f"(output also in {repo}/.runs/" in p.stderr.decode().splitlines()[0]
    far = tmp_path / "elsewhere" / "runs"
    p = wrap("run", "--", "true", cwd=sub, env={"EXPRAG_PLUS_DIR": str(far)})
    assert f"(output also in {far}/" in p.stderr.decode().splitlines()[0]


def test_the_end_line_names_up_to_eight_metrics_and_counts_the_rest(repo: Path) -> None:
    """Trial 5 missed train_loss on the end line (it showed the last 4): now the first 8, then how many more."""
    p = wrap("run", "--", PY, "-c", "for i in range(10): print(f'm{i}: {i}')", cwd=repo)
    last = p.stderr.decode().splitlines()[-1]
    assert last.endswith(": m0 0, m1 1, m2 2, m3 3, m4 4, m5 5, m6 6, m7 7, 2 more (show), exit 0"), last


def test_run_from_a_deleted_folder_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """`run` starts git in the working folder before anything else: a folder deleted under the shell must
    still give the one-line error every command gives."""
    gone = tmp_path / "gone"
    gone.mkdir()
    code = (f"import os, sys; sys.path.insert(0, {str(ROOT)!r}); os.chdir({str(gone)!r}); os.rmdir({str(gone)!r})\n"
            "from exprag_plus.cli import main\nsys.exit(main(['run', '--', 'true']))")
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode in (1, 2) and "Traceback" not in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_a_reader_that_stops_early_stops_the_command_as_without_the_wrapper(repo: Path) -> None:
    """`exprag-plus run -- CMD | head -1`: the command's stdout closes when ours does, so it gets SIGPIPE
    at its next write, as `CMD | head -1` does. Trial 7 found the wrapper raising out and the command
    running on unrecorded; the `tee -p` answer then let it run on for ever (trial 11: `yes | head -1`
    wrote 2 GB of output.log in 8 s)."""
    script(repo, "train.py", """
        import sys, time
        for i in range(40):
            print(f"step={i} loss={1.0 / (i + 1)}", flush=True)
            time.sleep(0.01)
        sys.exit(3)
    """)
    full = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([PY, "-m", "exprag_plus", "run", "--", PY, "train.py"], cwd=repo, env=full,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"step=0 loss=1.0\n"
    p.stdout.close()  # the reader is gone
    err = p.stderr.read().decode()
    assert p.wait(60) == 1, err  # python's own exit on a closed stdout
    assert "stdout was closed, so the command's is too, as without exprag-plus (its output so far is in " in err
    end = only_run(repo)[-1]
    assert (end["type"], end["status"], end["exit_code"]) == ("run_end", "failed", 1)
    assert "BrokenPipeError: [Errno 32] Broken pipe" in end["output"]["tail"]
    log = (repo / ".runs" / end["run_id"] / "output.log").read_text().splitlines()
    assert log[0] == "step=0 loss=1.0" and "step=39 loss=0.025" not in log
    t0 = time.monotonic()
    plain = subprocess.run(["bash", "-c", f"{shlex.quote(PY)} -m exprag_plus run -- yes | head -1"], cwd=repo,
                           env=full, capture_output=True, timeout=60)
    assert plain.stdout == b"y\n" and time.monotonic() - t0 < 30
    end = read_lines(runs_of(repo)[-1])[-1]
    assert (end["status"], end["signal"], end["exit_code"]) == ("failed", "SIGPIPE", 141)


def test_processes_the_command_leaves_running_are_not_waited_for(repo: Path) -> None:
    """`bash -c 'sleep 60 & echo started'` ends at once, but its daemon holds the output pipe: the wrapper
    waited the daemon's whole life (deaf to Ctrl-C), and with --timeout recorded a Timeout for a command
    that had exited 0. Now the pipes are read for a second more, and the run is the command's."""
    for args in ([], ["--timeout", "5"]):
        t0 = time.monotonic()
        p = wrap("run", *args, "--", "bash", "-c", "sleep 30 & echo $! > daemon.pid; echo started", cwd=repo,
                 timeout=60)
        took = time.monotonic() - t0
        daemon = int((repo / "daemon.pid").read_text())
        try:
            assert p.returncode == 0 and took < 15, (took, p.stderr)
            assert "leaving processes that still hold its output" in p.stderr.decode()
            end = read_lines(runs_of(repo)[-1])[-1]
            assert (end["status"], end["exit_code"], end["output"]["tail"]) == ("completed", 0, ["started"])
            assert alive(daemon)  # left alone, as without the wrapper
        finally:
            os.kill(daemon, signal.SIGKILL)


def test_a_last_line_longer_than_the_kept_tail_is_kept_cut(repo: Path) -> None:
    """The tail's first line is cut, so it was dropped: when it was the only one, the tail was empty."""
    wrap("run", "--", PY, "-c", "import sys; print('x' * 70000 + 'END'); sys.exit(1)", cwd=repo)
    (line,) = only_run(repo)[-1]["output"]["tail"]
    assert line.endswith("xEND") and 60000 < len(line) < 70000


def test_a_real_time_signal_and_a_script_without_a_shebang(repo: Path) -> None:
    """Trial 12: a command killed by signal 37 was recorded `completed` (Python names no real-time signal:
    the wrapper failed on it); a script without #! could not run (shells hand it to sh)."""
    p = wrap("run", "--", "bash", "-c", "kill -37 $$", cwd=repo)
    assert p.returncode == -37
    end = read_lines(runs_of(repo)[-1])[-1]
    assert (end["status"], end["exit_code"]) == ("failed", 165) and end["signal"].startswith("SIGRTMIN+")
    (repo / "nosb.sh").write_text("echo hi\necho 'acc: 0.3'\n")
    (repo / "nosb.sh").chmod(0o755)
    p = wrap("run", "--", "./nosb.sh", cwd=repo)
    assert p.returncode == 0 and p.stdout == b"hi\nacc: 0.3\n"
    end = read_lines(runs_of(repo)[-1])[-1]
    assert (end["status"], end["summary"]["acc"]["last"]) == ("completed", 0.3)


def test_main_called_with_arguments_returns_the_signal_instead_of_dying(repo: Path, monkeypatch: Any, main: Any) -> None:
    """Only the program dies of its command's signal; a Python caller of main(argv) (these tests) gets 128+N."""
    monkeypatch.chdir(repo)
    rc, out, err = main("run", "--", "bash", "-c", "kill -TERM $$")
    assert rc == 128 + signal.SIGTERM and "failed" in err
    assert only_run(repo)[-1]["signal"] == "SIGTERM"
