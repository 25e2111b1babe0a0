"""`exprag-plus skill`: print, write or install the agent skill (the text comes from skill.py)."""

from __future__ import annotations

import argparse
import os
import sys

from .lazy import lazy
git = lazy(f"{__package__}.git")
skill = lazy(f"{__package__}.skill")
from .cli import Commands, UsageError, emit_json


def cmd_skill(args: argparse.Namespace) -> None:
    if args.force and not (args.write or args.install):
        raise UsageError("--force goes with --write or --install")
    if not (args.write or args.install):
        if args.json:
            return emit_json({"name": skill.NAME, "description": skill.DESCRIPTION, "text": skill.render()})
        sys.stdout.write(skill.render())
        return
    paths = [args.write] if args.write else []
    if args.install:
        top = git.toplevel(os.getcwd()) or os.getcwd()
        paths += skill.install_paths(top, args.install)
    results = [skill.write(p, force=args.force) for p in paths]
    if args.json:
        return emit_json({"written": results})
    for r in results:
        print(f"{r['status']}: {r['path']}")


def register(commands: Commands) -> None:
    sp = commands.add("skill", cmd_skill, "print, write or install the SKILL.md that teaches coding agents to use exprag-plus")
    sp.add_argument("--print", action="store_true", help="print the skill (the default)")
    sp.add_argument("--write", metavar="PATH", help="write it to PATH (a file, or a folder to hold SKILL.md)")
    sp.add_argument("--install", nargs="?", const="all", choices=["claude", "agents", "opencode", "all"],
                    help="write it where agents look, at the repository top level: .claude/skills/, "
                         ".agents/skills/ (Codex, Cursor, Gemini CLI, Copilot, OpenCode), .opencode/skills/ (default: all)")
    sp.add_argument("--force", action="store_true", help="replace a different existing file")
