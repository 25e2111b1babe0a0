"""`exprag-plus run -- CMD`: record any command as a run, with its code, output and metrics.

The command runs in its own process group (so a timeout can kill all it started); on a terminal it is
given the foreground, so Ctrl-C and prompts reach it as if it ran alone. Its stdout and stderr are
copied byte for byte, chunk by chunk as they arrive, to ours and to `<runs>/<run_id>/output.log`.
Lines that hold only a JSON object or `NAME: NUMBER` become `track` records unless a process joined
the run with its own `Experiment` (then it tracks for itself and the output is not parsed twice).
"""

from __future__ import annotations

import collections
import errno
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Pattern, Sequence, Tuple

from . import artifacts, files, git, ids, records
from .store import OUTPUT_LOG
from .redact import known_secrets, redact_text
from .experiment import ENV_RUN, JOINED_MARK, Experiment

TAIL_LINES = 20
_TAIL_BYTES = 64 * 1024
_MAX_LINE = 64 * 1024
_KILL_GRACE_S = 5.0

_NUM = rb"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|(?i:nan|inf|infinity))"
# A candidate line: only a JSON object, or only NAME: NUMBER / NAME = NUMBER.
_LINE = re.compile(rb"[ \t]*(?:(\{.*\})|([A-Za-z_][A-Za-z0-9_./-]*)[ \t]*[:=][ \t]*(" + _NUM + rb"))[ \t]*\r?\Z")


class WrapperError(ValueError):
    """Bad input to `run` (an empty command, a bad --parse pattern)."""


def compile_patterns(texts: Sequence[str]) -> List[Pattern[str]]:
    """--parse patterns: each needs at least one named group (`step` is the step)."""
    out = []
    for text in texts:
        try:
            pat = re.compile(text)
        except re.error as exc:
            raise WrapperError(f"--parse {text!r} is not a regular expression: {exc}") from None
        if not pat.groupindex:
            raise WrapperError(f"--parse {text!r} has no named group: name each value, e.g. "
                               "'step (?P<step>\\d+) \\| loss (?P<loss>[0-9.]+)'")
        out.append(pat)
    return out


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _candidate_lines(body: bytes, lo: int = 0, hi: Optional[int] = None) -> Iterator[Tuple[int, int]]:
    """(start, end) of each line of body[lo:hi] holding `:` or `=`, found with bytes.find (memchr speed): a
    metric line has one, and most output (progress bars, logs of numbers) is skipped without a regex
    touching it. Each of the two next hits is searched again only once passed."""
    n = len(body) if hi is None else hi
    pos = lo
    colon = body.find(b":", pos, n)
    equal = body.find(b"=", pos, n)
    while colon >= 0 or equal >= 0:
        hit = colon if equal < 0 or 0 <= colon < equal else equal
        r = body.rfind(b"\n", lo, hit)
        start = lo if r < 0 else r + 1
        end = body.find(b"\n", hit, n)
        end = n if end < 0 else end
        if end - start <= _MAX_LINE:
            cr = body.rfind(b"\r", start, end)
            yield (cr + 1 if cr >= 0 and cr + 1 < end else start), end
        pos = end + 1
        if 0 <= colon < pos:
            colon = body.find(b":", pos, n)
        if 0 <= equal < pos:
            equal = body.find(b"=", pos, n)


def _count_lines(data: bytes) -> int:
    """data.count(b"\n"), faster for long lines: bytes.count tests byte by byte, bytes.find is memchr,
    so while lines are long (>= 2 KiB on average) newlines are hopped over with find."""
    n = len(data)
    find = data.find
    count = pos = 0
    while True:
        for _ in range(16):
            j = find(b"\n", pos)
            if j < 0:
                return count
            count += 1
            pos = j + 1
        if pos < 2048 * count:  # short lines: counting the rest is cheaper
            return count + data.count(b"\n", pos, n)


class MetricParser:
    """Turns output bytes into tracked values; a line split across chunks is carried over."""

    def __init__(self, patterns: Sequence[Pattern[str]] = (), default: bool = True) -> None:
        self.patterns = list(patterns)
        self.default = default
        self._carry = b""
        self._skip = False  # inside a line too long to be a metric line

    def feed(self, data: bytes, final: bool = False) -> Iterator[Dict[str, Any]]:
        """Values of the complete lines so far; `data` is copied only for a line it ends or begins. A line
        longer than _MAX_LINE is no metric line, however the reads cut it."""
        start = 0
        if self._carry or self._skip:
            nl = data.find(b"\n")
            if nl < 0 and not final:
                if not self._skip:
                    self._carry += data
                    if len(self._carry) > _MAX_LINE:
                        self._carry, self._skip = b"", True
                return
            start = len(data) if nl < 0 else nl + 1
            if not self._skip:
                head = self._carry + data[:start]
                yield from self._values(head, 0, len(head))
            self._carry, self._skip = b"", False
        cut = len(data) if final else max(start, data.rfind(b"\n") + 1)
        if cut < len(data):
            if len(data) - cut <= _MAX_LINE:
                self._carry = data[cut:]
            else:
                self._skip = True
        if cut > start:
            yield from self._values(data, start, cut)

    def _values(self, body: bytes, lo: int, hi: int) -> Iterator[Dict[str, Any]]:
        if self.default:
            for start, end in _candidate_lines(body, lo, hi):
                m = _LINE.match(body, start, end)
                if m is not None:
                    value = self._default(m)
                    if value is not None:
                        yield value
        if self.patterns:
            for raw in body[lo:hi].split(b"\n"):
                if len(raw) > _MAX_LINE:
                    continue
                line = raw.rsplit(b"\r", 1)[-1].decode("utf-8", "replace") if b"\r" in raw else raw.decode("utf-8", "replace")
                for pat in self.patterns:
                    m2 = pat.search(line)
                    if m2:
                        value = {k: _number(v) for k, v in m2.groupdict().items() if v is not None}
                        if value:
                            yield value

    @staticmethod
    def _default(m: "re.Match[bytes]") -> Optional[Dict[str, Any]]:
        if m.group(1) is not None:
            text = m.group(1).rsplit(b"\r", 1)[-1].strip()
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):
                return None
            return records.from_json(value) if isinstance(value, dict) and value else None
        return {m.group(2).decode("ascii"): _number(m.group(3).decode("ascii"))}


class _Output:
    """The copy to output.log and the counts, tail and metrics of what went by."""

    def __init__(self, path: str, parsers: Optional[Dict[int, MetricParser]], secrets: Sequence[str] = ()) -> None:
        self.path = path
        self.fd = files.open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
                                | getattr(os, "O_NOFOLLOW", 0))  # a symlink planted there is refused, not followed
        self.secrets = [s.encode("utf-8", "surrogateescape") for s in secrets]
        self._held = b""  # the log's last bytes, held back until a secret that may straddle two chunks is known
        self.parsers = parsers or {}
        self.bytes = 0
        self.lines = 0
        self._chunks: "collections.deque[bytes]" = collections.deque()
        self._kept = 0
        self.last_newline = True

    def add(self, data: bytes, stream: int) -> Iterator[Dict[str, Any]]:
        """Log a chunk in arrival order; its lines are read per stream, so stderr never splits a stdout line."""
        self._log(data)
        self.bytes += len(data)
        self.lines += _count_lines(data)
        self.last_newline = data.endswith(b"\n")
        self._chunks.append(data)
        self._kept += len(data)
        while self._kept - len(self._chunks[0]) >= _TAIL_BYTES:
            self._kept -= len(self._chunks.popleft())
        parser = self.parsers.get(stream)
        if parser is not None:
            yield from parser.feed(data)

    def _log(self, data: bytes, final: bool = False) -> None:
        """Write to output.log with the command's known secrets (`redact.known_secrets`) replaced."""
        if not self.secrets:
            _write_all(self.fd, data)
            return
        buf = self._held + data
        for s in self.secrets:
            buf = buf.replace(s, b"***")
        cut = len(buf) if final else _secret_start(buf, self.secrets)
        self._held = buf[cut:]
        _write_all(self.fd, buf[:cut])

    def finish(self) -> Iterator[Dict[str, Any]]:
        for parser in self.parsers.values():
            yield from parser.feed(b"", final=True)
        self._log(b"", final=True)
        os.close(self.fd)

    @property
    def tail(self) -> bytes:
        return b"".join(self._chunks)[-_TAIL_BYTES:]

    def summary(self, root: str) -> Dict[str, Any]:
        text = self.tail.decode("utf-8", "replace")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(self.tail) >= _TAIL_BYTES and len(lines) > 1:
            lines = lines[1:]  # the first one is cut (a last line longer than the tail is kept, cut)
        known = [s.decode("utf-8", "replace") for s in self.secrets]
        tail = [redact_text(l.rsplit("\r", 1)[-1] if "\r" in l else l, known) for l in lines[-TAIL_LINES:]]
        return {"file": os.path.relpath(self.path, root), "bytes": self.bytes,
                "lines": self.lines + (0 if self.last_newline or not self.bytes else 1), "tail": tail}


def _secret_start(buf: bytes, secrets: Sequence[bytes]) -> int:
    """Where the end of `buf` could begin one of `secrets` (len(buf) when it cannot): only that much of
    the log waits for the next chunk, so a crash loses no more of it."""
    cut = len(buf)
    for s in secrets:
        i = buf.find(s[:1], max(0, len(buf) - len(s) + 1))
        while 0 <= i < cut:
            if s.startswith(buf[i:]):
                cut = i
                break
            i = buf.find(s[:1], i + 1)
    return cut


def _write_all(fd: int, data: bytes) -> bool:
    """False when nothing reads `fd` any more (`run ... | head` ended): the echo stops, the log goes on."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            time.sleep(0.001)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                return False
            raise
    return True


def _foreground(tty: Optional[int], pgid: int) -> None:
    if tty is None:
        return
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(tty, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def _holder(tty: Optional[int]) -> int:
    """The process group in the terminal's foreground (-1: none or unknown)."""
    if tty is None:
        return -1
    try:
        return os.tcgetpgrp(tty)
    except OSError:
        return -1


def _terminal() -> Optional[int]:
    """stdin when it is our controlling terminal: the command gets it whenever we are its foreground job."""
    try:
        return 0 if os.isatty(0) and os.tcgetpgrp(0) > 0 else None
    except OSError:
        return None


def run_command(argv: Sequence[str], *, name: Optional[str] = None, metadata: Optional[Dict[str, Any]] = None,
                note: Optional[str] = None, root: Optional[str] = None, timeout: Optional[float] = None,
                parse: bool = True, patterns: Sequence[Pattern[str]] = (), resume: Optional[str] = None,
                announce: Any = None, record_artifacts: bool = True, max_artifacts: int = artifacts.MAX_RECORDED,
                hash_limit: int = artifacts.HASH_LIMIT, stdout_fd: int = 1) -> Dict[str, Any]:
    """Run `argv` as a recorded run; returns {run_id, status, exit_code, signal, duration_s, metrics, output,
    artifacts, path, unread, left_open, terminal} (`unread`: see `unread_metric_line`; `left_open`: processes
    the command left running still held its output, which is recorded no further: see `_pump`; `terminal`:
    the command was given the terminal, so a Ctrl-C there reached it alone).

    The command's stdout is echoed on `stdout_fd` (2 under `run --json`: stdout is for the JSON alone).
    `announce(text)` is told when the run starts (its id and output file) before the command runs. With
    `record_artifacts`, the files the command created or modified under the working folder get an
    `artifact` record each (at most `max_artifacts`; `artifact_scan` in run_end counts the rest).
    """
    argv = [str(a) for a in argv]
    if not argv or not argv[0]:
        raise WrapperError("no command to run: give it after `--`, e.g. exprag-plus run -- python train.py")
    cwd = os.getcwd()
    command: Dict[str, Any] = {"argv": records.redact_argv(argv), "cwd": cwd}
    if patterns:
        command["parse"] = [p.pattern for p in patterns]
    if not parse:
        command["no_parse"] = True
    if timeout is not None:
        command["timeout"] = timeout
    start = {"command": command}  # what `replay` needs to run it the same way again
    if resume is None:
        git.prefetch(cwd)  # git reads the code's state while the runs folder is found and files are listed
    root = ids.runs_dir(root)
    scan: Optional[artifacts.Scan] = None
    listing: Optional[_Background] = None
    if record_artifacts:
        ids.ensure_runs_dir(root)
        scan = artifacts.Scan(cwd, root)
        listing = _Background(scan.prepare)  # while git snapshots the code: neither writes under cwd
    start_child = _child_start()  # while git works
    try:
        exp = Experiment(name or os.path.basename(argv[0]), metadata, root, resume=resume, _start_fields=start)
    finally:
        git.drop_prefetch()  # unused when the run was joined or resumed
    if note:
        exp.note(note, kind="hypothesis")
    folder = os.path.join(exp.root, exp.run_id)
    os.makedirs(folder, exist_ok=True)
    parsers = {fd: MetricParser(patterns, parse) for fd in (1, 2)} if (parse or patterns) else None
    env = dict(os.environ)
    out = _Output(os.path.join(folder, OUTPUT_LOG), parsers, known_secrets(argv, env))
    if announce:
        announce(exp)
    env[ENV_RUN] = exp.path
    env.setdefault("PYTHONUNBUFFERED", "1")
    tty = _terminal()
    t0 = time.monotonic()
    interrupted: List[int] = []
    child: List[int] = []

    held: List[int] = []  # the signal that stopped the command, while we leave it stopped

    def forward(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            interrupted.append(signum)
        if child:
            _killpg(child[0], signum)
            if held:  # a stopped command would act on it only once continued
                held.clear()
                _killpg(child[0], signal.SIGCONT)

    # before the command starts: a signal that comes early must still reach it, never end us alone. One we
    # were started ignoring (nohup's SIGHUP, a script's background job's SIGINT) stays ignored, by both.
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
                if signal.getsignal(s) is not signal.SIG_IGN}
    # its exit ends the pump's wait (see `_pump`); with a terminal, its stops are ours to follow (`job_control`)
    previous.update({s: signal.signal(s, _nothing) for s in ((signal.SIGCHLD, signal.SIGCONT) if tty is not None
                                                              else (signal.SIGCHLD,))})
    wakeup = _Wakeup()
    if scan is not None and listing is not None:
        if not listing.join():
            scan.prepare()
        scan.mark(out.path)  # after the listing, right before the command starts
    try:
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    preexec_fn=start_child)
        except OSError as exc:
            if exc.errno != errno.ENOEXEC:
                raise
            # a script without #!: shells (and execvp) run it with sh
            proc = subprocess.Popen(["/bin/sh", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    preexec_fn=start_child)
    except OSError as exc:
        wakeup.close()
        for s, h in previous.items():
            signal.signal(s, h)
        if scan is not None:
            scan.close()
        code = 127 if isinstance(exc, FileNotFoundError) else 126  # as a shell: not found, or found but not runnable
        why = "Is a directory" if os.path.isdir(argv[0]) else exc.strerror or exc  # EACCES, as bash words it
        error = {"type": "ExecError", "message": f"cannot run {argv[0]!r}: {why}"}
        exp.end("failed", error, exit_code=code, signal=None, output=out.summary(exp.root))
        list(out.finish())
        return {**_result(exp, "failed", code, None, time.monotonic() - t0, out, exp.root), "error": error}
    child.append(proc.pid)
    if interrupted:
        _killpg(proc.pid, signal.SIGINT)
    handed = _holder(tty) == os.getpgrp()  # we are the terminal's foreground job: the command gets the terminal
    if handed:
        _foreground(tty, proc.pid)

    def job_control() -> None:
        """The command is in a process group of its own, so a terminal's job control reaches it alone:
        Ctrl-Z stopped it and the terminal hung, deaf even to Ctrl-C; reading the terminal from the
        background stopped it and the job never read as stopped. When it stops, we stop our job too (the
        shell then shows it stopped); `fg` continues us with the terminal, which goes to the command before
        it is continued; `bg` continues it in the background, unless it stopped to read the terminal."""
        if tty is None:
            return
        ours = (os.getpgrp(), proc.pid)
        sig = _stopped(proc.pid)
        if sig:
            held[:] = [sig]
            # a read of the terminal before we handed it over, or after `fg` gave it to us, is no stop
            if not (sig in (signal.SIGTTIN, signal.SIGTTOU) and _holder(tty) in ours):
                if _holder(tty) == proc.pid:  # never take the terminal from the shell (after `bg`)
                    _foreground(tty, os.getpgrp())
                _killpg(os.getpgrp(), signal.SIGTSTP)  # returns once continued
        if _holder(tty) == os.getpgrp():
            _foreground(tty, proc.pid)
        if held and (_holder(tty) == proc.pid or held[0] not in (signal.SIGTTIN, signal.SIGTTOU)):
            held.clear()
            _killpg(proc.pid, signal.SIGCONT)

    joined = os.path.join(folder, JOINED_MARK)
    timed_out, left_open = False, False
    try:
        timed_out, left_open = _pump(proc, out, exp, joined, None if timeout is None else t0 + timeout,
                                     scan.watch if scan is not None else None, stdout_fd, wakeup.fd, job_control)
        for value in out.finish():
            if not os.path.exists(joined):
                exp.track(value)
        code = proc.wait()
    except BaseException as exc:  # our failure, not the command's: it must not outlive us, nor read as completed
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        exp.end("failed", {"type": "WrapperError", "message": f"exprag-plus failed while recording: "
                           f"{type(exc).__name__}: {exc}"}, exit_code=None, signal=None, output=out.summary(exp.root))
        raise
    finally:
        wakeup.close()
        for s, h in previous.items():
            signal.signal(s, h)
        if _holder(tty) == proc.pid:
            _foreground(tty, os.getpgrp())
    duration = time.monotonic() - t0  # as the record's: leftovers' linger included
    sig = -code if code < 0 else None
    exit_code = 128 + sig if sig else code
    if timed_out:
        status, error, exit_code = "failed", {"type": "Timeout", "message": f"killed after the {timeout:g} s timeout"}, 124
    elif sig == signal.SIGINT or (interrupted and exit_code in (130, 128 + signal.SIGINT)):
        status, error = "interrupted", {"type": "Signal", "message": "interrupted (SIGINT)"}
    elif sig:
        status, error = "failed", {"type": "Signal", "message": f"killed by {_signal_name(sig)}"}
    elif code != 0:
        status, error = "failed", {"type": "ExitCode", "message": f"exited with code {code}"}
    else:
        status, error = "completed", None
    joined_name, joined_error = _joined(exp)
    if error is not None and joined_error:
        error.update(joined_error)
    extra: Dict[str, Any] = {"name": joined_name} if joined_name and name is None else {}
    if scan is not None:
        extra["artifact_scan"] = _record_artifacts(exp, scan, max_artifacts, hash_limit)
    output = out.summary(exp.root)
    exp.end(status, error, **extra, exit_code=exit_code, signal=_signal_name(sig) if sig else None,
            output=output)
    res = _result(exp, status, exit_code, _signal_name(sig) if sig else None, duration, out, exp.root)
    if parse and not os.path.exists(joined):
        res["unread"] = unread_metric_line(output.get("tail") or [], patterns)
    res["left_open"] = left_open
    res["terminal"] = handed
    return res


def _record_artifacts(exp: Experiment, scan: "artifacts.Scan", cap: int, hash_limit: int) -> Dict[str, Any]:
    """An `artifact` record per file the command wrote (those a joined script recorded itself are not
    repeated); returns what run_end's `artifact_scan` says: found, recorded, omitted (over the cap)."""
    t0 = time.monotonic()
    info: Dict[str, Any] = {"found": 0, "recorded": 0, "omitted": 0}
    try:
        found = scan.changed()
        top = (exp.git or {}).get("toplevel") if isinstance(exp.git, dict) else None
        if exp.joined or os.path.exists(os.path.join(exp.root, exp.run_id, JOINED_MARK)):
            from . import store

            have = {r.get("path") for r in store.iter_records(exp.path) if r.get("type") == "artifact"}
            found = [f for f in found if artifacts.shown_path(f[0], top) not in have]
        kept, info = artifacts.choose(found, cap, scan.top)
        for path, _size, created in kept:
            try:
                fields = artifacts.describe(path, hash_limit=hash_limit, toplevel=top)
            except OSError:  # gone since the walk, or not a regular file
                info["recorded"] -= 1
                continue
            fields["change"] = "created" if created else "modified"
            exp._append("artifact", fields)
        if info["omitted"]:
            info["note"] = (f"{info['found']} files were created or modified; only {cap} were recorded "
                            "(models first); raise the cap with --max-artifacts")
    except KeyboardInterrupt:
        info["note"] = "interrupted while recording artifacts: the list is incomplete"
    info["seconds"] = round(time.monotonic() - t0, 3)
    return info


def _pump(proc: "subprocess.Popen[bytes]", out: _Output, exp: Experiment, joined: str,
          deadline: Optional[float], watch: Any = None, stdout_fd: int = 1, wakeup_fd: int = -1,
          on_signal: Any = None) -> Tuple[bool, bool]:
    """Copy both pipes until they close; returns (the deadline killed the command, some process it left
    running still held its output).

    Once the command has exited, its pipes are read for _LINGER_S more at most: a daemon it started
    (`sleep 60 &`) keeps them open, and waiting for it made a command that ended at once last a minute,
    deaf to Ctrl-C, or read as killed by --timeout. A reader of ours that goes away (`run ... | head`)
    closes the command's pipe too, as without us: it gets SIGPIPE when it next writes there (before, it
    ran on forever and `yes | head` filled the disk). The artifact watch's events are read every _DRAIN_S:
    between reads the kernel folds repeated events (a log written line by line) into one, and a queue that
    overflows anyway only makes the scan stat every file. `wakeup_fd` (see `_Wakeup`) ends a wait, so that
    Python runs the signal handlers, then `on_signal()`."""
    sel = selectors.DefaultSelector()
    pipes = {1: proc.stdout, 2: proc.stderr}
    targets = {f.fileno(): s for s, f in pipes.items()}  # type: ignore[union-attr]
    for fd in targets:
        _grow_pipe(fd)
        sel.register(fd, selectors.EVENT_READ)
    if wakeup_fd >= 0:
        sel.register(wakeup_fd, selectors.EVENT_READ)
    drain_at = time.monotonic() + _DRAIN_S if watch is not None else None
    timed_out = False
    kill_at: Optional[float] = None
    exited_at: Optional[float] = None
    is_joined = False
    echo: Dict[int, Optional[int]] = {1: stdout_fd, 2: 2}  # stream -> where it is echoed (None: closed)
    while targets:
        wait = None
        now = time.monotonic()
        if exited_at is not None:
            if now >= exited_at + _LINGER_S:
                break
            wait = exited_at + _LINGER_S - now
        elif deadline is not None and not timed_out:
            if now >= deadline:
                timed_out = True
                _killpg(proc.pid, signal.SIGTERM)
                kill_at = now + _KILL_GRACE_S
            else:
                wait = deadline - now
        if kill_at is not None:
            if now >= kill_at:
                _killpg(proc.pid, signal.SIGKILL)
                kill_at = None
            else:
                wait = kill_at - now if wait is None else min(wait, kill_at - now)
        if drain_at is not None:
            if now >= drain_at:
                watch.drain()
                drain_at = now + _DRAIN_S
            wait = drain_at - now if wait is None else min(wait, drain_at - now)
        for key, _ in sel.select(wait):
            fd = key.fd
            if fd == wakeup_fd:
                _drain(fd)
                if exited_at is None and proc.poll() is not None:
                    exited_at = time.monotonic()
                if on_signal is not None:
                    on_signal()
                continue
            if fd not in targets:  # closed below in this round
                continue
            data = os.read(fd, _READ)
            if not data:
                sel.unregister(fd)
                del targets[fd]
                continue
            stream = targets[fd]
            dest = echo[stream]
            if dest is not None and not _write_all(dest, data):
                for stream in [s for s, d in echo.items() if d == dest]:
                    echo[stream] = None
                    sel.unregister(pipes[stream].fileno())  # type: ignore[union-attr]
                    del targets[pipes[stream].fileno()]  # type: ignore[union-attr]
                    pipes[stream].close()  # type: ignore[union-attr]
                if echo[2] is not None:
                    _write_all(2, f"exprag-plus: {'stdout' if dest == 1 else 'stderr'} was closed, so the "
                               f"command's is too, as without exprag-plus (its output so far is in {out.path})\n"
                               .encode())
            for value in out.add(data, stream):
                is_joined = is_joined or os.path.exists(joined)
                if not is_joined:
                    exp.track(value)
    left_open = bool(targets)
    sel.close()
    if timed_out and proc.poll() is None:
        try:
            proc.wait(_KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            _killpg(proc.pid, signal.SIGKILL)
    return timed_out, left_open


def _child_start() -> Any:
    """What the command's process does before it runs the command: lead a process group of its own (Ctrl-C
    and --timeout reach all it starts, and only that), and on Linux die with us (PR_SET_PDEATHSIG): a wrapper
    killed by `kill -9` or `timeout -k` left the command running on while its run read `crashed`."""
    parent = os.getpid()
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (ImportError, OSError, AttributeError):
            prctl = None

    def start() -> None:
        os.setpgrp()
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # we died before it was set
                os.kill(os.getpid(), signal.SIGKILL)

    return start


_PR_SET_PDEATHSIG = 1
_READ = 1 << 20
_DRAIN_S = 0.2
_LINGER_S = 1.0
_F_SETPIPE_SZ = 1031  # Linux


class _Wakeup:
    """A pipe the C-level signal handler writes to (`signal.set_wakeup_fd`). Python runs a handler only
    between bytecodes: a Ctrl-C that lands after the last check and before the pipes' select starts
    waiting was never forwarded, and a silent command then ran on forever (1 in 120 under load)."""

    def __init__(self) -> None:
        self.fd = -1
        self._w = -1
        self._old = -1
        try:
            r, w = os.pipe()
        except OSError:
            return
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        try:
            self._old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread (then no handler of ours runs either)
            os.close(r)
            os.close(w)
            return
        self.fd, self._w = r, w

    def close(self) -> None:
        if self.fd < 0:
            return
        signal.set_wakeup_fd(self._old)
        os.close(self.fd)
        os.close(self._w)
        self.fd = self._w = -1


def _signal_name(sig: int) -> str:
    """SIGTERM, or SIGRTMIN+3 for a real-time signal (which have no name of their own in Python)."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        low = getattr(signal, "SIGRTMIN", 0)
        return f"SIGRTMIN+{sig - low}" if low and sig > low else f"SIG{sig}"


def _nothing(signum: int, frame: Any) -> None:
    """A handler that only makes the signal write to the wakeup pipe (the default would not)."""


def _stopped(pid: int) -> int:
    """The signal that stopped the child since last asked (0: none); an exit is left for Popen."""
    try:
        info = os.waitid(os.P_PID, pid, os.WSTOPPED | os.WNOHANG)
    except (OSError, AttributeError):
        return 0
    return info.si_status if info is not None and info.si_code == os.CLD_STOPPED else 0


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe: a command printing hundreds of MB is copied in 16x fewer reads and writes."""
    try:
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, _READ)
    except (ImportError, OSError):
        pass


class _Background:
    """A function run in a daemon thread; join() says whether it returned (False: it raised)."""

    def __init__(self, fn: Any) -> None:
        self.ok = False

        def run() -> None:
            try:
                fn()
                self.ok = True
            except Exception:  # the caller runs it again, in its own thread, and sees the error
                pass

        self.thread = threading.Thread(target=run, name="exprag-plus-listing", daemon=True)
        self.thread.start()

    def join(self) -> bool:
        self.thread.join()
        return self.ok


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def _joined(exp: Experiment) -> Tuple[Optional[str], Optional[Dict[str, Any]]]:
    """What a joined Python process said: its Experiment's name and metadata (merged into the run's), and
    the exception it ended with (why the command failed, in its own words)."""
    from . import store

    name, error = None, None
    if not os.path.exists(os.path.join(exp.root, exp.run_id, JOINED_MARK)):
        return name, error
    for rec in store.iter_records(exp.path):
        if rec.get("type") == "join":
            if isinstance(rec.get("name"), str) and name is None:
                name = rec["name"]
            if isinstance(rec.get("metadata"), dict) and isinstance(exp.metadata, dict):
                exp.metadata.update(rec["metadata"])
        elif rec.get("type") == "join_end" and isinstance(rec.get("error"), dict):
            err = rec["error"]
            error = {"type": err.get("type"), "message": err.get("message"), "traceback": err.get("traceback")}
    return name, error


def _result(exp: Experiment, status: str, exit_code: int, sig: Optional[str], duration: float, out: _Output,
            root: str) -> Dict[str, Any]:
    from . import store

    run = store.Run.read(exp.path)
    summary = run.summary
    metrics = {p: s.get("last") for p, s in summary.items() if p.rsplit(".", 1)[-1] not in records.AXES}
    run_end = run.end or {}
    return {"run_id": exp.run_id, "status": status, "exit_code": exit_code, "signal": sig,
            "duration_s": round(duration, 3), "metrics": metrics, "output": out.summary(root),
            "artifacts": run_end.get("artifact_scan"), "path": exp.path}


def nested() -> bool:
    """Inside another `exprag-plus run`: the outer wrapper already records this command."""
    path = os.environ.get(ENV_RUN, "")
    return bool(path) and os.path.isfile(path)


def exec_plain(argv: Sequence[str]) -> None:
    """Become the command (no second record): the enclosing wrapper captures its output."""
    try:
        os.execvp(argv[0], list(argv))
    except OSError as exc:
        raise WrapperError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None


__all__ = ["run_command", "compile_patterns", "MetricParser", "WrapperError", "nested", "exec_plain",
           "OUTPUT_LOG"]


_TOKEN = re.compile(r"[^\s,|;=:]+|[=:]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUMBER = re.compile(_NUM.decode() + r"\Z")


def _pairs(line: str) -> Optional[List[Tuple[str, str]]]:
    """(name, separator) of a short line made only of NAME[=|:]NUMBER pairs (2 or more, names distinct),
    else None. A walk over tokens, not one regex: nested optional parts backtrack exponentially on long lines."""
    if len(line) > 1000 or any(c not in " \t,|;=:_.+-" and not c.isalnum() for c in line.rstrip("\r")):
        return None
    tokens = _TOKEN.findall(line)
    out: List[Tuple[str, str]] = []
    names = set()
    i = 0
    while i < len(tokens):
        name = tokens[i]
        sep = tokens[i + 1] if i + 1 < len(tokens) and tokens[i + 1] in "=:" else ""
        j = i + 1 + bool(sep)
        if not _IDENT.match(name) or j >= len(tokens) or not _NUMBER.match(tokens[j]):
            return None
        if name in names:
            return None
        names.add(name)
        out.append((name, sep))
        i = j + 1
    return out if len(out) >= 2 else None


def unread_metric_line(tail: Sequence[str], patterns: Sequence[Pattern[str]]) -> Optional[Tuple[str, str]]:
    """A line of the output's tail made only of NAME NUMBER pairs (`epoch 3 train_loss 0.51`, `step=9
    loss=2.3`) that no rule read, and a `--parse` pattern that would read it: runs forget `--parse`."""
    for line in reversed(tail):
        pairs = _pairs(line)
        if pairs is None or any(p.search(line) for p in patterns):
            continue
        pieces = [re.escape(name) + (r"\s*" + re.escape(sep) + r"\s*" if sep else r"\s+") + f"(?P<{name}>[^\\s,|;]+)"
                  for name, sep in pairs]
        return line.strip(), r"\W+".join(pieces)
    return None
