"""The settings a wrapped command line states (`--lr 0.1`, `--lr=0.1`, `--amp`, `lr=0.1`), as metadata.

`exprag-plus run -- python train.py --lr 0.1` records `{"args": {"lr": 0.1}}`, so runs that differ only in
their flags compare, filter (`--where args.lr=0.1`) and replay like runs given `--meta`. Only what the
line itself says is known: a script's defaults are not (`--meta` or `Experiment(metadata=...)` says them).
Short options (`-n 3`) are skipped: whether `-n` takes a value is the program's secret.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Sequence, Tuple

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_NUMBER = re.compile(r"-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\Z")


def _value(text: str) -> Any:
    """JSON when it is a number, true/false/null or a JSON list or object; text otherwise."""
    if text[:1] in "-0123456789.[{tfn" and text:
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def nest(pairs: Dict[str, Any]) -> Tuple[Dict[str, Any], List[str]]:
    """Dotted names as groups (`a.b=1` is {"a": {"b": 1}}), and the names that could not nest because a
    value already stands where their group would (`a=1 a.b=2`: a.b is returned, and left out)."""
    out: Dict[str, Any] = {}
    clashes: List[str] = []
    for key, value in pairs.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                clashes.append(key)
                break
        else:
            node[parts[-1]] = value
    return out, clashes


def settings(argv: Sequence[str]) -> Dict[str, Any]:
    """Options and NAME=VALUE overrides of a command line, by name (dotted names nest, see `nest`); the
    last of a repeated one wins."""
    out: Dict[str, Any] = {}
    words = list(argv[1:])
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            continue
        if word.startswith("--"):
            name, eq, text = word[2:].partition("=")
            if not _NAME.match(name):
                continue
            if eq:
                out[name.replace("-", "_")] = _value(text)
            elif i < len(words) and (not words[i].startswith("-") or _NUMBER.match(words[i])):
                out[name.replace("-", "_")] = _value(words[i])
                i += 1
            else:
                out[name.replace("-", "_")] = True
        elif not word.startswith("-"):
            name, eq, text = word.partition("=")
            if eq and _NAME.match(name):
                out[name] = _value(text)
    return nest(out)[0]
