"""`exprag-plus mcp`: the real server in a subprocess, driven by the official MCP Python SDK (both protocol
generations) and by a raw pipe (the handshake versions the SDK does not offer, and everything malformed);
`--install` for Claude Code, Codex and Cursor with merging."""

from __future__ import annotations

import asyncio
import json
import re
import os
import queue
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from conftest import GIT_ENV, ROOT, git

TRAIN = "print('train v1')\n"
ACTIONS_MODULE = textwrap.dedent("""\
    import os
    import sys

    from exprag_plus import Action


    class Publish(Action):
        \"\"\"Publish the model somewhere\"\"\"

        model: str = "mlp"

        def execute(self, interaction):
            target = interaction.choice("target", "Publish to:", ["hub", "folder"])
            private = interaction.checkbox("private", "Private?", default=True)
            print("noise from print")  # none of this may reach the protocol stream
            sys.stdout.write("noise from sys.stdout\\n")
            sys.stdout.flush()
            os.system("echo noise from a child process")
            return {"target": target, "private": private, "model": self.model}
    """)
TRAIN_DIRTY = "print('train v2: tuned')\n"
SCHEMA = textwrap.dedent("""\
    objective: add one twice
    inputs:
    - parameter: p1
    outputs:
    - parameter: p3
    actions:
    - commands:
        - command: echo $((<<parameter:p1>> + 1))
          stdout: <<parameter:p2>>
    - commands:
        - command: echo $((<<parameter:p2>> + 1))
          stdout: <<parameter:p3>>
    """)

HANDSHAKE = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN = "2026-07-28"
ALL_TOOLS = {"list_runs", "keys", "show_run", "best_run", "metric_history", "compare_runs", "code_diff",
             "restore_run", "list_actions", "run_action", "task_info", "add_note", "tag_run", "progress", "list_notes"}


def server_env(world: Dict[str, Any]) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EXPRAG_PLUS_DIR"}
    env.update(GIT_ENV)
    env["GIT_CONFIG_GLOBAL"] = str(world["gitconfig"])
    env["PYTHONPATH"] = str(ROOT)
    return env


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """A repository with two runs in a runs folder: `baseline` (clean, 150 steps) and `tuned` (dirty tree)."""
    base = tmp_path_factory.mktemp("mcp")
    gitconfig = base / "gitconfig"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n")
    w: Dict[str, Any] = {"base": base, "gitconfig": gitconfig, "repo": base / "repo", "runs": base / "runs"}
    env = server_env(w)
    repo = w["repo"]
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["add", "train.py", "publish.py"], ["commit", "-qm", "first"]):
        if args[0] == "add":
            (repo / "train.py").write_text(TRAIN)
            (repo / "publish.py").write_text(ACTIONS_MODULE)
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)

    def record(name: str, lr: float, steps: int, nan_last: bool = False) -> None:
        code = textwrap.dedent(f"""
            from exprag_plus import Experiment
            from publish import Publish
            with Experiment({name!r}, metadata={{"hparams": {{"lr": {lr}}}, "model": "mlp"}}, root={str(w['runs'])!r}) as e:
                if {not nan_last}:
                    e.add_action(Publish(model="mlp"))
                for step in range({steps}):
                    e.track({{"step": step, "loss": 1.0 / (step + 1) * {lr * 10}, "acc": step / {steps}}})
                if {nan_last}:
                    e.track({{"step": {steps}, "loss": float("nan"), "acc": 0.999}})
            """)
        subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, check=True, capture_output=True)

    record("baseline", 0.1, 150)
    (repo / "train.py").write_text(TRAIN_DIRTY)
    record("tuned", 0.01, 5, nan_last=True)
    files = sorted(w["runs"].glob("*.jsonl"))
    w["baseline"], w["tuned"] = (json.loads(f.read_text().splitlines()[0])["run_id"] for f in files)
    (base / "task.yaml").write_text(SCHEMA)
    return w


# --- a raw pipe client -------------------------------------------------------------------------------


class Raw:
    """The server as a subprocess; every stdout line is kept and must be a JSON-RPC 2.0 message."""

    def __init__(self, world: Dict[str, Any], *args: str, module: str = "exprag_plus.mcp",
                 root: Optional[Path] = None) -> None:
        cmd = [sys.executable, "-m", *module.split(), "--root", str(root or world["runs"]), *args]
        self.p = subprocess.Popen(cmd, cwd=world["repo"], env=server_env(world), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: List[bytes] = []
        self.messages: "queue.Queue[Any]" = queue.Queue()
        self.err: List[bytes] = []
        self.next_id = 1000
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=lambda: self.err.extend(iter(self.p.stderr.readline, b"")), daemon=True).start()

    def _read_out(self) -> None:
        for line in iter(self.p.stdout.readline, b""):
            self.lines.append(line)
            try:
                self.messages.put(json.loads(line))
            except ValueError:
                self.messages.put(("not json", line))

    def send(self, message: Any) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def recv(self, timeout: float = 15) -> Any:
        return self.messages.get(timeout=timeout)

    def nothing_more(self, wait: float = 0.3) -> bool:
        try:
            extra = self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected message: {extra}")

    def request(self, method: str, params: Optional[Dict[str, Any]] = None, version: Optional[str] = None) -> Any:
        self.next_id += 1
        msg: Dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None or version:
            msg["params"] = dict(params or {})
        if version:
            msg["params"]["_meta"] = {"io.modelcontextprotocol/protocolVersion": version,
                                      "io.modelcontextprotocol/clientCapabilities": {}}
        self.send(msg)
        reply = self.recv()
        assert reply.get("id") == self.next_id, reply
        return reply

    def initialize(self, version: str) -> Any:
        reply = self.request("initialize", {"protocolVersion": version, "capabilities": {},
                                            "clientInfo": {"name": "raw", "version": "0"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply["result"]

    def close(self, timeout: float = 10) -> int:
        self.p.stdin.close()
        try:
            return self.p.wait(timeout=timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()

    def stderr(self) -> str:
        return b"".join(self.err).decode("utf-8", "replace")

    def assert_only_jsonrpc(self) -> None:
        assert self.lines, "the server wrote nothing"
        for line in self.lines:
            assert line.endswith(b"\n") and line.count(b"\n") == 1
            msg = json.loads(line)
            assert msg.get("jsonrpc") == "2.0", line
            assert ("id" in msg) and (("result" in msg) != ("error" in msg)), line


@pytest.fixture
def raw(world: Dict[str, Any]):
    clients: List[Raw] = []

    def start(*args: str, **kw: Any) -> Raw:
        clients.append(Raw(world, *args, **kw))
        return clients[-1]

    yield start
    for c in clients:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()


def structured(result: Dict[str, Any]) -> Any:
    """The JSON text content, checked to equal structuredContent where present."""
    assert result["isError"] is False, result
    data = json.loads(result["content"][0]["text"])
    if "structuredContent" in result:
        assert result["structuredContent"] == data
    return data


# --- the official SDK client ---------------------------------------------------------------------------


def run_sdk(world: Dict[str, Any], mode: str, body: Any, module: str = "exprag_plus.mcp") -> Any:
    mcp = pytest.importorskip("mcp")
    params = mcp.StdioServerParameters(command=sys.executable,
                                       args=["-m", *module.split(), "--root", str(world["runs"])],
                                       env=server_env(world), cwd=str(world["repo"]))

    async def main() -> Any:
        async with mcp.Client(params, mode=mode, read_timeout_seconds=30) as client:
            return await body(client, mcp)

    return asyncio.run(main())


async def call(client: Any, tool: str, **arguments: Any) -> Any:
    res = await client.call_tool(tool, arguments)
    assert not res.is_error, res.content[0].text
    data = json.loads(res.content[0].text)
    assert res.structured_content == data
    return data


async def exercise_every_tool(client: Any, mcp: Any, world: Dict[str, Any]) -> None:
    base_id, tuned_id = world["baseline"], world["tuned"]
    listing = await client.list_tools()
    tools = {t.name: t for t in listing.tools}
    assert ALL_TOOLS <= set(tools)
    for t in tools.values():
        assert t.title and t.description and t.output_schema and t.input_schema["type"] == "object"
        assert t.annotations.open_world_hint is False
    assert tools["list_runs"].annotations.read_only_hint is True
    assert tools["restore_run"].annotations.read_only_hint is False
    assert tools["restore_run"].annotations.destructive_hint is False
    assert tools["run_action"].annotations.destructive_hint is True

    runs = await call(client, "list_runs")
    assert (runs["total"], runs["shown"]) == (2, 2) and runs["runs"][0]["id"] == tuned_id
    sel = await call(client, "list_runs", where=["hparams.lr<0.05"], sort="-acc", limit=1)
    assert [r["name"] for r in sel["runs"]] == ["tuned"]
    keys = await call(client, "keys")
    assert {"loss", "acc"} <= set(keys["metrics"]) and "step" in keys["axes"] and "hparams.lr" in keys["metadata"]
    one = await call(client, "keys", run=base_id[-8:])
    assert one["runs"] == 1
    shown = await call(client, "show_run", run="latest")
    assert shown["id"] == tuned_id and shown["git"]["dirty"] is True and shown["summary"]["loss"]["last"] == "NaN"
    best = await call(client, "best_run", metric="acc")
    assert best["run"]["id"] == tuned_id and best["last"] == 0.999
    best = await call(client, "best_run", metric="loss", minimize=True, final=True)
    assert best["run"]["id"] == base_id and "final" in best["rule"]
    hist = await call(client, "metric_history", run=base_id, metric="loss")
    assert (hist["count"], hist["shown"], hist["sampled"]) == (150, 100, True)
    at = await call(client, "metric_history", run=base_id, metric="loss", step=3, max_points=0)
    assert [p["step"] for p in at["points"]] == [3]
    cmp = await call(client, "compare_runs", a=base_id, b=tuned_id)
    assert [m["path"] for m in cmp["metadata"]] == ["hparams.lr"] and cmp["code"]["same_commit"] is False
    diff = await call(client, "code_diff", a=base_id, b=tuned_id)
    assert "-print('train v1')" in diff["diff"] and "+print('train v2: tuned')" in diff["diff"]
    stat = await call(client, "code_diff", a=base_id, stat=True)
    assert "train.py" in stat["diff"] and stat["b"] == "worktree"
    acts = await call(client, "list_actions")
    assert [(x["name"], x["run_id"]) for x in acts["actions"]] == [("Publish", base_id)] and acts["runs"] == 2
    times = (await call(client, "list_actions", run=base_id[:13]))["actions"][0]["times_run"]
    done = await call(client, "run_action", run=base_id, name="Publish", answers={"target": "folder", "private": False})
    assert done["status"] == "ok" and done["result"] == {"target": "folder", "private": False, "model": "mlp"}
    done = await call(client, "run_action", run=base_id, name="Publish", answers={"target": "HUB"})
    assert done["answers"] == {"target": "hub", "private": True}  # defaults are used and recorded
    assert (await call(client, "list_actions", run=base_id))["actions"][0]["times_run"] == times + 2
    for writer in ("add_note", "tag_run"):
        t = tools[writer]
        assert t.annotations.read_only_hint is False and t.description.startswith("WRITES")
    rec = await call(client, "add_note", run=base_id, text="lr 0.1 is the baseline", kind="decision")
    assert rec["type"] == "note" and rec["kind"] == "decision" and rec["seq"] > 0
    await call(client, "tag_run", run=base_id, add=["keep", "baseline"])
    await call(client, "tag_run", run=base_id, remove=["baseline"])
    kept = await call(client, "list_runs", where=["tag=keep", "note~baseline"])
    assert [r["id"] for r in kept["runs"]] == [base_id] and kept["runs"][0]["tags"] == ["keep"]
    assert kept["runs"][0]["latest_note"]["text"] == "lr 0.1 is the baseline"
    noted = await call(client, "list_notes", kind="decision", where=[f"id={base_id}"])
    assert [(n["run"]["id"], n["text"]) for n in noted["notes"]][-1] == (base_id, "lr 0.1 is the baseline")
    assert all(n["kind"] == "decision" for n in noted["notes"]) and noted["shown"] == noted["matched"]
    prog = await call(client, "progress", metric="loss", minimize=True)
    assert [r["id"] for r in prog["runs"]] == [base_id, tuned_id] and prog["runs"][0]["tags"] == ["keep"]
    assert [r["improved"] for r in prog["runs"]] == [True, False] and prog["since_improvement"] == 1
    assert prog["best"]["id"] == base_id
    shown = await call(client, "show_run", run=base_id)
    assert (shown["notes"][-1]["kind"], shown["notes"][-1]["text"]) == ("decision", "lr 0.1 is the baseline")
    assert shown["notes"][-1]["seq"] == rec["seq"] and shown["tags"] == ["keep"]  # the world is shared: no count
    info = await call(client, "task_info", path=str(world["base"] / "task.yaml"))
    assert info["objective"] == "add one twice" and [a["outputs"] for a in info["actions"]] == [["p2"], ["p3"]]

    # bad arguments, unknown runs and metrics: isError results with a one-line reason
    for name, args, words in [
        ("list_runs", {"limit": "ten"}, ["limit", "integer"]),
        ("show_run", {}, ["missing required argument 'run'"]),
        ("show_run", {"run": "zzzzzz"}, ["zzzzzz"]),
        ("metric_history", {"run": base_id, "metric": "los"}, ["no metric 'los'", "loss"]),
        ("best_run", {"metric": "accuracy"}, ["accuracy", "nearest"]),
        ("list_runs", {"where": ["nonsense"]}, ["bad --where"]),
        ("keys", {"bogus": 1}, ["unknown argument 'bogus'"]),
        ("task_info", {"path": str(world["base"] / "missing.yaml")}, ["cannot read"]),
        ("run_action", {"run": base_id, "name": "Publish"}, ["'target'", "one of 'hub', 'folder'", "answers"]),
        ("run_action", {"run": base_id, "name": "Publish", "answers": {"target": "moon"}}, ["'moon'", "not a valid choice"]),
        ("run_action", {"run": base_id, "name": "Publsh", "answers": {}}, ["did you mean 'Publish'"]),
        ("run_action", {"run": base_id, "name": "Publish", "answers": {"target": ["hub"]}}, ["argument 'answers'.target"]),
        ("run_action", {"run": base_id, "name": "Publish", "code": "yesterday"}, ["'code' must be one of"]),
        ("add_note", {"run": base_id, "text": "  "}, ["empty note"]),
        ("tag_run", {"run": base_id}, ["no tag given"]),
        ("tag_run", {"run": "zzzzzz", "add": ["keep"]}, ["zzzzzz"]),
        ("best_run", {"metric": "step"}, ["axis"]),
    ]:
        res = await client.call_tool(name, args)
        text = res.content[0].text
        assert res.is_error is True and "\n" not in text and all(w in text for w in words), (name, text)
    with pytest.raises(mcp.MCPError) as err:
        await client.call_tool("no_such_tool", {})
    assert err.value.code == -32602 and "no_such_tool" in err.value.message


def user_state(repo: Path) -> Any:
    return (git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain"), (repo / "train.py").read_text(),
            (repo / ".git" / "index").read_bytes())


def test_sdk_2026_07_28_generation_every_tool(world: Dict[str, Any]) -> None:
    before = user_state(world["repo"])
    into = world["base"] / "restored-modern"

    async def body(client: Any, mcp: Any) -> None:
        assert client.protocol_version == MODERN  # mode="auto": server/discover, then per-request _meta
        assert client.session.discover_result.supported_versions[0] == MODERN
        assert client.server_info.name == "exprag-plus"
        await exercise_every_tool(client, mcp, world)
        res = await call(client, "restore_run", run=world["tuned"], into=str(into))
        assert res["path"] == str(into) and res["checked_out"] is False

    run_sdk(world, "auto", body)
    assert (into / "train.py").read_text() == TRAIN_DIRTY
    assert user_state(world["repo"]) == before


@pytest.mark.filterwarnings("ignore:ping is removed")  # the SDK warns about ping on any connection
def test_sdk_handshake_generation_through_the_cli(world: Dict[str, Any]) -> None:
    async def body(client: Any, mcp: Any) -> None:
        assert client.protocol_version == "2025-11-25"  # mode="legacy": initialize + notifications/initialized
        await exercise_every_tool(client, mcp, world)
        res = await call(client, "restore_run", run=world["baseline"])
        assert os.path.isdir(res["path"]) and res["commit"] == git(world["repo"], "rev-parse", "HEAD").strip()
        await client.send_ping()

    run_sdk(world, "legacy", body, module="exprag_plus mcp")


def test_sdk_pinned_modern_version_and_unsupported_version_error(world: Dict[str, Any]) -> None:
    async def body(client: Any, mcp: Any) -> None:
        assert client.protocol_version == MODERN  # pinned: no probe, every request carries the envelope
        assert (await call(client, "list_runs", limit=1))["shown"] == 1
        with pytest.raises(mcp.MCPError) as err:  # a version the server does not speak: -32022
            await client.session.send_discover("2099-01-01")
        assert err.value.code == -32022
        assert err.value.data == {"supported": [MODERN, *reversed(HANDSHAKE)], "requested": "2099-01-01"}

    run_sdk(world, MODERN, body)


# --- raw pipe: handshake versions, feature gating, malformed input, stdout hygiene, EOF ----------------------


@pytest.mark.parametrize("version", HANDSHAKE)
def test_handshake_versions_leave_out_what_they_lack(raw: Any, world: Dict[str, Any], version: str) -> None:
    c = raw()
    init = c.initialize(version)
    assert init["protocolVersion"] == version and init["serverInfo"]["name"] == "exprag-plus"
    assert init["capabilities"] == {"tools": {"listChanged": False}} and "resultType" not in init
    tools = c.request("tools/list")["result"]["tools"]
    assert {t["name"] for t in tools} >= ALL_TOOLS and all("inputSchema" in t for t in tools)
    new = version >= "2025-06-18"
    assert all(("outputSchema" in t) == new and ("title" in t) == new for t in tools)
    assert all(("annotations" in t) == (version >= "2025-03-26") for t in tools)
    res = c.request("tools/call", {"name": "keys", "arguments": {"run": world["baseline"]}})["result"]
    assert ("structuredContent" in res) == new and structured(res)["runs"] == 1
    assert c.close() == 0
    c.assert_only_jsonrpc()


def test_unknown_version_gets_the_latest_and_requests_before_initialize_are_answered(raw: Any) -> None:
    c = raw()
    early = c.request("tools/call", {"name": "list_runs", "arguments": {"limit": 1}})  # lenient: no initialize
    assert structured(early["result"])["shown"] == 1 and "structuredContent" in early["result"]
    assert c.initialize("1999-01-01")["protocolVersion"] == "2025-11-25"
    assert c.initialize(MODERN)["protocolVersion"] == "2025-11-25"  # initialize is the handshake generation
    assert c.close() == 0


def test_modern_generation_on_the_wire(raw: Any) -> None:
    c = raw()
    disc = c.request("server/discover", version=MODERN)["result"]
    assert disc["supportedVersions"] == [MODERN, *reversed(HANDSHAKE)]
    assert disc["resultType"] == "complete" and disc["cacheScope"] in ("public", "private") and disc["ttlMs"] >= 0
    assert disc["capabilities"]["tools"] == {"listChanged": False}
    assert disc["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "exprag-plus"
    listing = c.request("tools/list", version=MODERN)["result"]
    assert listing["resultType"] == "complete" and "ttlMs" in listing and "cacheScope" in listing
    assert all("outputSchema" in t and "annotations" in t for t in listing["tools"])
    res = c.request("tools/call", {"name": "list_runs", "arguments": {}}, version=MODERN)["result"]
    assert res["resultType"] == "complete" and structured(res)["total"] == 2
    bad = c.request("tools/list", version="2099-01-01")["error"]
    assert bad == {"code": -32022, "message": "Unsupported protocol version",
                   "data": {"supported": [MODERN, *reversed(HANDSHAKE)], "requested": "2099-01-01"}}
    no_caps = c.request("tools/list", {"_meta": {"io.modelcontextprotocol/protocolVersion": MODERN}})["error"]
    assert no_caps["code"] == -32602 and "clientCapabilities" in no_caps["message"]
    assert c.request("server/discover")["error"]["code"] == -32602  # discover needs the envelope
    assert c.close() == 0
    c.assert_only_jsonrpc()


def test_malformed_input_never_kills_the_server(raw: Any) -> None:
    c = raw()
    c.initialize("2025-03-26")
    c.send(b"this is not json\n")
    reply = c.recv()
    assert reply["id"] is None and reply["error"]["code"] == -32700 and "Parse error" in reply["error"]["message"]
    c.send(b"\xff\xfe{}\n")
    assert c.recv()["error"]["code"] == -32700
    c.send(b"\n   \n")  # blank lines are skipped
    for bad, code, rid in [([], -32600, None), ({"jsonrpc": "2.0", "id": 7}, -32600, 7),
                           ({"jsonrpc": "1.0", "id": 8, "method": "ping"}, -32600, 8),
                           ({"jsonrpc": "2.0", "id": [1], "method": "ping"}, -32600, None),
                           ("just a string", -32600, None),
                           ({"jsonrpc": "2.0", "id": 9, "method": "no/such/method"}, -32601, 9),
                           ({"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "nope"}}, -32602, 10),
                           ({"jsonrpc": "2.0", "id": 11, "method": "tools/call",
                             "params": {"name": "keys", "arguments": [1]}}, -32602, 11),
                           ({"jsonrpc": "2.0", "id": 12, "method": "tools/list", "params": [1]}, -32602, 12)]:
        c.send(bad)
        reply = c.recv()
        assert reply["error"]["code"] == code and reply["id"] == rid, (bad, reply)
    c.send({"jsonrpc": "2.0", "method": "notifications/whatever", "params": {}})
    c.send({"jsonrpc": "2.0", "method": "no/such/notification"})
    c.send({"jsonrpc": "2.0", "result": {}, "id": 99})  # a stray response: ignored
    assert c.nothing_more()
    # a JSON-RPC batch (2025-03-26 allows them): one array of replies
    c.send([{"jsonrpc": "2.0", "id": "a", "method": "ping"}, {"jsonrpc": "2.0", "method": "notifications/x"},
            {"jsonrpc": "2.0", "id": "b", "method": "tools/call", "params": {"name": "keys", "arguments": {}}}])
    batch = c.recv()
    assert [r["id"] for r in batch] == ["a", "b"] and batch[0]["result"] == {}
    assert c.request("ping")["result"] == {}
    assert c.close() == 0


def test_stdout_carries_only_protocol_even_when_the_library_warns(raw: Any, world: Dict[str, Any],
                                                                   tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(world["runs"], runs)
    path = next(p for p in runs.glob("*.jsonl") if world["baseline"] in p.name)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:5] + [b'{"type": "track", "value": {"loss": oops}'] + lines[5:]))
    c = raw(root=runs)
    c.initialize("2025-06-18")
    shown = structured(c.request("tools/call", {"name": "show_run", "arguments": {"run": world["baseline"]}})["result"])
    assert shown["name"] == "baseline"
    assert structured(c.request("tools/call", {"name": "list_runs", "arguments": {}})["result"])["total"] == 2
    done = c.request("tools/call", {"name": "run_action", "arguments": {  # prints, and its child echoes
        "run": world["baseline"], "name": "Publish", "answers": {"target": "hub"}}})["result"]
    assert structured(done)["status"] == "ok"
    assert c.close() == 0
    c.assert_only_jsonrpc()
    err = c.stderr()
    assert "skipped a corrupt line" in err and "noise from print" in err and "noise from sys.stdout" in err
    assert "noise from a child process" in err


def test_stdin_eof_exits_zero_promptly(raw: Any) -> None:
    c = raw(module="exprag_plus mcp")
    c.initialize("2025-11-25")
    t0 = time.monotonic()
    assert c.close() == 0
    assert time.monotonic() - t0 < 2.0
    c.assert_only_jsonrpc()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a FIFO to make a call block")
def test_ping_is_answered_while_a_tool_call_is_busy(raw: Any, world: Dict[str, Any], tmp_path: Path) -> None:
    fifo = tmp_path / "slow.yaml"
    os.mkfifo(fifo)  # task_info blocks opening it until a writer comes: a slow call without test hooks
    c = raw()
    c.initialize("2025-06-18")
    c.send({"jsonrpc": "2.0", "id": "slow", "method": "tools/call",
            "params": {"name": "task_info", "arguments": {"path": str(fifo)}}})
    for _ in range(3):
        assert c.request("ping")["result"] == {}
    assert c.request("tools/call", {"name": "keys", "arguments": {}})["result"]["isError"] is False
    with open(fifo, "w") as f:
        f.write(SCHEMA)
    reply = c.recv()
    assert reply["id"] == "slow" and structured(reply["result"])["objective"] == "add one twice"
    assert c.close() == 0
    c.assert_only_jsonrpc()


def test_a_cancelled_call_gets_no_response() -> None:
    from exprag_plus import mcp as server_mod

    gate, out = threading.Event(), []
    slow = server_mod.Tool("slow", "Slow", "blocks until released", {}, (), {"type": "object"},
                           lambda srv, a: gate.wait(10) and {"done": True})
    srv = server_mod.Server("/nonexistent", out.append, tools={"slow": slow})
    srv.handle_line(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}\n')
    srv.handle_line(b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}\n')
    srv.handle_line(b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow"}}\n')
    gate.set()
    srv.close(grace=5)
    replies = [json.loads(line) for line in out]
    assert [r["id"] for r in replies] == [2] and replies[0]["result"]["structuredContent"] == {"done": True}



USER_CODE = textwrap.dedent("""\
    from exprag_plus import Action


    class Interrupt(Action):
        def execute(self, interaction):
            raise KeyboardInterrupt


    class Version(Action):
        def execute(self, interaction):
            return "v1"


    class Big(Action):
        def execute(self, interaction):
            return {"rows": ["x" * 1000] * 5000}


    class Vanish(Action):
        def execute(self, interaction):
            import os
            os.chdir("/")
            print("going away")
            os._exit(3)
    """)


@pytest.fixture
def action_world(tmp_path: Path) -> Dict[str, Any]:
    """A repository whose committed `user_code.py` has two actions, registered by one run."""
    w: Dict[str, Any] = {"base": tmp_path, "gitconfig": tmp_path / "gitconfig", "repo": tmp_path / "repo",
                         "runs": tmp_path / "runs"}
    w["gitconfig"].write_text("[init]\n\tdefaultBranch = main\n")
    env = server_env(w)
    w["repo"].mkdir()
    (w["repo"] / "user_code.py").write_text(USER_CODE)
    for args in (["init", "-q", "-b", "main"], ["add", "user_code.py"], ["commit", "-qm", "v1"]):
        subprocess.run(["git", *args], cwd=w["repo"], env=env, check=True, capture_output=True)
    code = ("from exprag_plus import Experiment\nimport user_code\n"
            f"with Experiment('acts', root={str(w['runs'])!r}) as e:\n"
            "    e.add_action(user_code.Interrupt())\n    e.add_action(user_code.Version())\n"
            "    e.add_action(user_code.Big())\n    e.add_action(user_code.Vanish())\n")
    subprocess.run([sys.executable, "-c", code], cwd=w["repo"], env=env, check=True, capture_output=True)
    return w


def _action_result(c: "Raw", **arguments: Any) -> Any:
    reply = c.request("tools/call", {"name": "run_action", "arguments": {"run": "latest", **arguments}})
    return reply["result"]


def test_an_action_raising_keyboardinterrupt_kills_no_worker(action_world: Dict[str, Any]) -> None:
    c = Raw(action_world)
    try:
        for _ in range(6):  # more calls than worker threads: each one is answered
            res = _action_result(c, name="Interrupt")
            assert res["isError"] is True and "KeyboardInterrupt" in res["content"][0]["text"], res
        assert c.request("tools/call", {"name": "list_runs", "arguments": {}})["result"]["isError"] is False
        assert c.close() == 0
    finally:
        if c.p.poll() is None:
            c.p.kill()
    c.assert_only_jsonrpc()


def test_run_action_sees_the_code_as_it_is_at_each_call(action_world: Dict[str, Any]) -> None:
    user_code = action_world["repo"] / "user_code.py"
    c = Raw(action_world)
    try:
        assert structured(_action_result(c, name="Version", code="run"))["result"] == "v1"
        user_code.write_text(USER_CODE.replace('"v1"', '"v22"'))  # another size: a same-second .pyc cannot match
        assert structured(_action_result(c, name="Version"))["result"] == "v22"  # not the run's worktree copy
        user_code.write_text(USER_CODE.replace('"v1"', '"v333"'))
        assert structured(_action_result(c, name="Version"))["result"] == "v333"  # not the previous import
        assert structured(_action_result(c, name="Version", code="run"))["result"] == "v1"
        assert c.close() == 0
    finally:
        if c.p.poll() is None:
            c.p.kill()



def test_a_huge_action_result_is_bounded_in_the_reply_and_whole_in_the_record(action_world: Dict[str, Any]) -> None:
    c = Raw(action_world)
    try:
        out = structured(_action_result(c, name="Big"))
        assert c.close() == 0
    finally:
        if c.p.poll() is None:
            c.p.kill()
    assert max(len(line) for line in c.lines) < 100_000
    assert out["status"] == "ok" and out["result"] is None and len(out["result_preview"]) == 20_000
    assert "5020010 characters of JSON" in out["result_truncated"]
    (path,) = action_world["runs"].glob("*.jsonl")
    (rec,) = [json.loads(line) for line in path.read_text().splitlines() if '"action_run"' in line]
    assert rec["result"] == {"rows": ["x" * 1000] * 5000} and f"(seq {rec['seq']})" in out["result_truncated"]


# --- --install ---------------------------------------------------------------------------------------------


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An `exprag-plus` executable on PATH (so the registration names it, not an absolute path)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "exprag-plus"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")


ENTRY = {"command": "exprag-plus", "args": ["mcp"]}


@pytest.mark.parametrize("client,rel", [("claude", ".mcp.json"), ("cursor", ".cursor/mcp.json")])
def test_install_json_clients_merge(main: Any, repo: Path, monkeypatch: pytest.MonkeyPatch, on_path: None,
                                    client: str, rel: str) -> None:
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")  # the file goes to the repository top level
    target = repo / rel
    rc, out, err = main("mcp", "--install", client)
    assert rc == 0 and json.loads(out) == {"mcpServers": {"exprag-plus": ENTRY}} and not target.exists()
    assert str(target) in err
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps({"mcpServers": {"other": {"command": "other-server", "args": ["x"]},
                                                 "exprag-plus": {"command": "old", "env": {"K": "V"}}},
                                  "someSetting": [1, 2]}))
    rc, out, err = main("mcp", "--install", client, "--write")
    assert rc == 0 and out == ""
    data = json.loads(target.read_text())
    assert data == {"mcpServers": {"other": {"command": "other-server", "args": ["x"]},
                                   "exprag-plus": {"command": "exprag-plus", "args": ["mcp"], "env": {"K": "V"}}},
                    "someSetting": [1, 2]}
    rc, _, err = main("mcp", "--install", client, "--write")
    assert rc == 0 and "nothing changed" in err
    target.unlink()
    assert main("mcp", "--install", client, "--write", "--root", "my runs")[0] == 0  # a new file
    assert json.loads(target.read_text())["mcpServers"]["exprag-plus"]["args"] == \
        ["mcp", "--root", str(repo / "sub" / "my runs")]
    target.write_text("{not json")
    rc, _, err = main("mcp", "--install", client, "--write")
    assert rc == 1 and "not valid JSON" in err and target.read_text() == "{not json"


def test_install_codex_appends_or_replaces_only_its_table(main: Any, tmp_path: Path, on_path: None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "codex-home"
    monkeypatch.setenv("CODEX_HOME", str(home))
    table = '[mcp_servers.exprag-plus]\ncommand = "exprag-plus"\nargs = ["mcp"]\n'
    rc, out, err = main("mcp", "--install", "codex")
    assert rc == 0 and out == table and str(home / "config.toml") in err and not home.exists()
    assert main("mcp", "--install", "codex", "--write")[0] == 0
    assert (home / "config.toml").read_text() == table
    head = '# my settings\nmodel = "o3"  # keep this comment\n\n[mcp_servers.other]\ncommand = "x"\nargs = []\n'
    config = home / "config.toml"
    config.write_bytes(head.encode())
    assert main("mcp", "--install", "codex", "--write")[0] == 0
    assert config.read_bytes() == (head + "\n" + table).encode()
    old = '[mcp_servers."exprag-plus"]\ncommand = "/old/path/exprag-plus"\nargs = ["mcp", "--root", "/x"]\nstartup_timeout_sec = 9\n'
    tail = '\n# the next one\n[mcp_servers.exprag-plus.env]\nTOKEN = "t"\n\n[profiles.fast]\nmodel = "o4-mini"\n'
    config.write_bytes((head + "\n" + old + tail).encode())
    assert main("mcp", "--install", "codex", "--write")[0] == 0
    ours = '[mcp_servers."exprag-plus"]\ncommand = "exprag-plus"\nargs = ["mcp"]\nstartup_timeout_sec = 9\n'
    assert config.read_bytes() == (head + "\n" + ours + tail).encode()  # only command and args are ours
    if sys.version_info >= (3, 11):
        import tomllib

        parsed = tomllib.loads(config.read_text())
        assert parsed["mcp_servers"]["exprag-plus"] == {**ENTRY, "startup_timeout_sec": 9, "env": {"TOKEN": "t"}}
        assert parsed["profiles"] == {"fast": {"model": "o4-mini"}}
    # an args array over several lines, an inline env table and comments: the user's keys survive
    mine = ('[mcp_servers.exprag-plus]  # registered by hand\nenv = { EXPRAG_PLUS_DIR = "/data/runs" }\n'
            'command = "/old/exprag-plus" # old\nargs = [\n  "mcp",  # serve\n  "--root", "/x",\n]\n'
            'tool_timeout_sec = 120\n\n[profiles.fast]\nmodel = "o4-mini"\n')
    config.write_bytes(mine.encode())
    assert main("mcp", "--install", "codex", "--write")[0] == 0
    assert config.read_text() == ('[mcp_servers.exprag-plus]  # registered by hand\nenv = { EXPRAG_PLUS_DIR = "/data/runs" }\n'
                                  'command = "exprag-plus"\nargs = ["mcp"]\ntool_timeout_sec = 120\n\n'
                                  '[profiles.fast]\nmodel = "o4-mini"\n')


def test_install_without_exprag_plus_on_path_names_this_interpreter(main: Any, repo: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    rc, out, _ = main("mcp", "--install", "claude")
    assert rc == 0
    assert json.loads(out)["mcpServers"]["exprag-plus"] == {"command": sys.executable,
                                                            "args": ["-m", "exprag_plus", "mcp"]}
    rc, _, err = main("mcp", "--write")
    assert rc == 2 and "--install" in err


def test_an_action_that_exits_its_process_leaves_the_server_serving(action_world: Dict[str, Any]) -> None:
    """Actions run in a child process: os._exit, chdir and prints in user code stay there."""
    c = Raw(action_world)
    try:
        res = _action_result(c, name="Vanish")
        assert res["isError"] is True and "ended its process (exit code 3)" in res["content"][0]["text"], res
        res = _action_result(c, name="Version")
        assert res["isError"] is False and res["structuredContent"]["result"] == "v1"
        assert c.request("tools/call", {"name": "list_runs", "arguments": {}})["result"]["isError"] is False
        assert c.close() == 0
    finally:
        if c.p.poll() is None:
            c.p.kill()
    c.assert_only_jsonrpc()


def test_lone_surrogates_and_deep_nesting_are_answered_in_strict_utf8(raw: Any, world: Dict[str, Any],
                                                                       tmp_path: Path) -> None:
    """Issue 12 item 8: a lone-surrogate id, a run whose text holds lone surrogates, a deeply nested line."""
    runs = tmp_path / "runs"
    shutil.copytree(world["runs"], runs)
    path = next(p for p in runs.glob("*.jsonl") if world["baseline"] in p.name)
    lines = path.read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b'"name":"baseline"', b'"name":"base\\ud800line\\udcff"')
    assert b"\\ud800" in lines[0]
    path.write_bytes(b"\n".join(lines))
    c = raw(root=runs)
    c.initialize("2025-06-18")
    c.send(b'{"jsonrpc": "2.0", "id": "\\ud800", "method": "ping"}\n')
    reply = c.recv()
    assert reply["id"] is None and reply["error"]["code"] == -32600, reply
    c.send(b'{"jsonrpc": "2.0", "id": "\\udfff", "method": "tools/call", "params": {"name": "keys"}}\n')
    assert c.recv()["error"]["code"] == -32600
    c.send(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    reply = c.recv()
    assert reply["id"] is None and reply["error"]["code"] == -32700, reply
    c.send(b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"\n")
    assert c.recv()["error"]["code"] == -32700
    listed = c.request("tools/call", {"name": "list_runs", "arguments": {}})["result"]
    names = {r["name"] for r in structured(listed)["runs"]}
    assert "base\\ud800line\\xff" in names and "tuned" in names
    shown = c.request("tools/call", {"name": "show_run", "arguments": {"run": world["baseline"]}})["result"]
    assert structured(shown)["name"] == "base\\ud800line\\xff"
    assert c.request("ping")["result"] == {}
    assert c.close() == 0
    c.assert_only_jsonrpc()
    for line in c.lines:
        line.decode("utf-8")  # strict
        # no JSON escape of a lone surrogate (an escaped backslash before "ud8.." is plain text)
        assert not re.search(rb"(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F]", line)


def test_run_log_returns_a_bounded_tail_of_a_wrapped_runs_output(raw: Any, world: Dict[str, Any], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = {**server_env(world), "PYTHONPATH": str(ROOT), "EXPRAG_PLUS_DIR": str(runs)}
    subprocess.run([sys.executable, "-m", "exprag_plus", "run", "--", "bash", "-c",
                    "for i in $(seq 1 300); do echo line $i; done; printf 'x%.0s' $(seq 1 5000); echo; "
                    "echo 'Traceback: boom' >&2; exit 2"], cwd=world["repo"], env=env, capture_output=True, check=False)
    subprocess.run([sys.executable, "-c", "from exprag_plus import Experiment; print(Experiment('py').run_id)"],
                   cwd=world["repo"], env=env, capture_output=True, check=True)
    c = raw(root=runs)
    c.initialize(MODERN)
    got = structured(c.request("tools/call", {"name": "run_log", "arguments": {"run": "latest~1", "tail": 3}})["result"])
    assert got["lines"] == ["line 300", "x" * 2000, "Traceback: boom"] and got["truncated"] is True
    got = structured(c.request("tools/call", {"name": "run_log", "arguments": {"run": "latest~1", "grep": "^line 29"}})["result"])
    assert got["lines"] == ["line 29"] + [f"line {i}" for i in range(290, 300)] and got["truncated"] is False
    too_many = c.request("tools/call", {"name": "run_log", "arguments": {"run": "latest~1", "tail": 5000}})
    assert "error" in too_many or too_many["result"]["isError"] is True
    shown = structured(c.request("tools/call", {"name": "show_run", "arguments": {"run": "latest~1"}})["result"])
    assert shown["exit_code"] == 2 and shown["output"]["tail"][-1] == "Traceback: boom"
    plain = c.request("tools/call", {"name": "run_log", "arguments": {"run": "latest"}})
    assert plain["result"]["isError"] is True and "no captured output" in plain["result"]["content"][0]["text"]
