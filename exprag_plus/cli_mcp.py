"""`exprag-plus mcp`: serve the MCP server on stdio, or print / write its registration for a coding agent.

Registration targets (`--install`, printed by default, written with `--write`):
- claude: `.mcp.json` at the repository top level (else the current folder), merged: other servers and
  any extra keys of an existing `exprag-plus` entry (such as `env`) are kept.
- cursor: `.cursor/mcp.json` at the repository top level, the same JSON shape, merged the same way.
- codex:  `$CODEX_HOME/config.toml` (default `~/.codex/config.toml`): the `[mcp_servers.exprag-plus]`
  table is appended, or its `command` and `args` replaced (its other keys, such as `env` or timeouts,
  are kept); every other byte of the file stays as it was.

The command registered is `exprag-plus` when that is on PATH; else the absolute path of the running
`exprag-plus` script; else this interpreter with `-m exprag_plus` (so the registration works from a
virtual environment that is not activated). `--root DIR` is passed on as an absolute path.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from typing import Any, Dict, List, Optional

from .lazy import lazy
git = lazy(f"{__package__}.git")
from .cli import PROG, Commands, Failure, UsageError, note
from .files import write_atomic

SERVER_KEY = "exprag-plus"
CLIENTS = ("claude", "codex", "cursor")


def server_command(root: Optional[str] = None) -> Dict[str, Any]:
    """The `command`/`args` that start this server."""
    prefix: List[str] = []
    if shutil.which(PROG):
        command = PROG
    elif os.path.basename(sys.argv[0] or "") in (PROG, PROG + ".exe") and os.path.isfile(sys.argv[0]):
        command = os.path.abspath(sys.argv[0])
    else:
        command, prefix = sys.executable, ["-m", "exprag_plus"]
    args = prefix + ["mcp"]
    if root:
        args += ["--root", os.path.abspath(os.path.expanduser(root))]
    return {"command": command, "args": args}


def _top() -> str:
    here = os.getcwd()
    return git.toplevel(here) or here


def config_path(client: str) -> str:
    if client == "claude":
        return os.path.join(_top(), ".mcp.json")
    if client == "cursor":
        return os.path.join(_top(), ".cursor", "mcp.json")
    home = os.environ.get("CODEX_HOME") or os.path.join(os.path.expanduser("~"), ".codex")
    return os.path.join(home, "config.toml")


# --- JSON (Claude Code, Cursor) ----------------------------------------------------------------------


def merged_json(existing: Optional[str], entry: Dict[str, Any], path: str) -> str:
    """The file's text with `mcpServers.exprag-plus` set; everything else kept."""
    data: Any = {}
    if existing is not None and existing.strip():
        try:
            data = json.loads(existing)
        except ValueError as exc:
            raise Failure(f"{path} is not valid JSON ({exc}); fix it or add the entry by hand") from None
    if not isinstance(data, dict):
        raise Failure(f"{path} does not hold a JSON object; fix it or add the entry by hand")
    servers = data.setdefault("mcpServers", {})
    if not isinstance(servers, dict):
        raise Failure(f"{path}: \"mcpServers\" is not an object; fix it or add the entry by hand")
    current = servers.get(SERVER_KEY)
    servers[SERVER_KEY] = {**current, **entry} if isinstance(current, dict) else dict(entry)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


# --- TOML (Codex) ------------------------------------------------------------------------------------

_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*(?P<name>[^\[\]#]*?)[ \t]*\]\]?[ \t]*(#.*)?$")
_OUR_TABLE = re.compile(r"^mcp_servers[ \t]*\.[ \t]*(exprag-plus|\"exprag-plus\"|'exprag-plus')$")


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def toml_table(entry: Dict[str, Any], newline: str = "\n") -> str:
    lines = [f"[mcp_servers.{SERVER_KEY}]", f"command = {_toml_str(entry['command'])}",
             "args = [" + ", ".join(_toml_str(a) for a in entry["args"]) + "]"]
    return newline.join(lines) + newline


def merged_toml(existing: Optional[str], entry: Dict[str, Any], path: str) -> str:
    """`existing` with the `[mcp_servers.exprag-plus]` table appended, or its `command` and `args` replaced;
    nothing else changes. On Python 3.11+ the result must parse and hold the entry, else nothing is written."""
    text = existing or ""
    nl = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines)
                  if (m := _HEADER.match(line.rstrip("\r\n"))) and not line.lstrip().startswith("[[")
                  and _OUR_TABLE.match(m["name"])), None)
    block = toml_table(entry, nl)
    if start is None:
        if not text:
            out = block
        elif text.endswith("\n"):
            out = text + ("" if text.endswith("\n\n") or text.endswith("\r\n\r\n") else nl) + block
        else:
            out = text + nl + nl + block
    else:
        end = next((j for j in range(start + 1, len(lines)) if _HEADER.match(lines[j].rstrip("\r\n"))), len(lines))
        # only `command` and `args` are ours: env, timeouts, comments... in the table stay as they are
        body: List[str] = []
        at: Optional[int] = None
        depth = 0
        for line in lines[start + 1:end]:
            if depth > 0 or _OUR_KEY.match(line):
                at = len(body) if at is None else at
                depth = max(0, depth + _brackets(line)) if depth > 0 or "[" in line else 0
                continue
            body.append(line)
        if at is None:
            at = 0
        new = block.splitlines(keepends=True)[1:]
        out = "".join(lines[:start + 1]) + "".join(body[:at] + new + body[at:]) + "".join(lines[end:])
        if not lines[start].endswith(("\n", "\r")):  # a header on the file's last line, without a newline
            out = "".join(lines[:start]) + lines[start] + nl + "".join(body[:at] + new + body[at:])
    _check_toml(text, out, entry, path)
    return out


_OUR_KEY = re.compile(r"""^[ \t]*(command|args|"command"|"args"|'command'|'args')[ \t]*=""")
_STRING_OR_COMMENT = re.compile(r""""(?:\\.|[^"\\])*"|'[^']*'|#.*""")


def _brackets(line: str) -> int:
    """Opening minus closing brackets on a line, outside strings and comments (an `args` array may span lines)."""
    bare = _STRING_OR_COMMENT.sub("", line)
    return bare.count("[") - bare.count("]")


def _check_toml(before: str, after: str, entry: Dict[str, Any], path: str) -> None:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:  # Python < 3.11: no parser in the standard library; the splice is line-based
        return
    try:
        tomllib.loads(before)
    except tomllib.TOMLDecodeError as exc:
        raise Failure(f"{path} is not valid TOML ({exc}); fix it or add the table by hand") from None
    try:
        got = tomllib.loads(after).get("mcp_servers", {}).get(SERVER_KEY, {})
    except tomllib.TOMLDecodeError as exc:
        raise Failure(f"{path}: exprag-plus is defined there in a form this command does not edit ({exc}); "
                      f"edit the [mcp_servers.{SERVER_KEY}] table by hand") from None
    kept = {k: v for k, v in tomllib.loads(before).get("mcp_servers", {}).get(SERVER_KEY, {}).items()
            if k not in ("command", "args")}
    if got.get("command") != entry["command"] or got.get("args") != entry["args"] \
            or {k: v for k, v in got.items() if k not in ("command", "args")} != kept:
        raise Failure(f"{path}: could not set [mcp_servers.{SERVER_KEY}] safely; edit it by hand")


# --- writing ------------------------------------------------------------------------------------------


def _read(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Failure(f"{path} is not UTF-8 text; fix it or add the entry by hand") from None


def install(client: str, root: Optional[str], write: bool) -> None:
    path = config_path(client)
    entry = server_command(root)
    if not write:
        if client == "codex":
            sys.stdout.write(toml_table(entry))
        else:
            sys.stdout.write(json.dumps({"mcpServers": {SERVER_KEY: entry}}, indent=2, ensure_ascii=False) + "\n")
        where = "add this table to" if client == "codex" else "merge this into"
        note(f"{where} {path}, or run `{PROG} mcp --install {client} --write`")
        return
    before = _read(path)
    merge = merged_toml if client == "codex" else merged_json
    text = merge(before, entry, path)
    if before == text:
        note(f"{path} already registers {SERVER_KEY}; nothing changed")
        return
    write_atomic(path, text)
    note(f"{'updated' if before is not None else 'wrote'} {path}: {SERVER_KEY} runs "
         f"`{' '.join([entry['command']] + entry['args'])}`")


def cmd_mcp(args: argparse.Namespace) -> None:
    root = getattr(args, "root", None)
    if args.install:
        install(args.install, root, args.write)
        return
    if args.write:
        raise UsageError("--write needs --install claude|codex|cursor")
    from . import mcp

    mcp.serve_stdio(root)


def register(commands: Commands) -> None:
    sp = commands.add("mcp", cmd_mcp, "serve the run memory to coding agents over MCP (stdio), or register it "
                                      "with Claude Code, Codex or Cursor (--install)")
    sp.add_argument("--install", choices=CLIENTS, metavar="CLIENT",
                    help="print the registration for claude (.mcp.json), codex (~/.codex/config.toml) or "
                         "cursor (.cursor/mcp.json) instead of serving")
    sp.add_argument("--write", action="store_true", help="with --install: merge it into that file")
