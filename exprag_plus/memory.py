"""Notes and tags after the fact: append-only records through the one appender.

A correction is a new note, never an edit; a tag is removed by a later `tag` record that removes it.
Both refuse empty input here, so the CLI and the MCP server give the same one-line reasons.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, Optional

from . import appender
from .redact import redact_text

_TAG = re.compile(r"^[^\s,]{1,100}$")
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
KINDS = ("hypothesis", "observation", "decision", "conclusion")  # what the skill teaches; any word is accepted
MAX_NOTE = 20_000


def check_tags(tags: Iterable[Any]) -> list:
    out = []
    for t in tags:
        if not isinstance(t, str) or not _TAG.match(t):
            raise ValueError(f"bad tag {t!r}: a tag is 1-100 characters without spaces or commas, e.g. keep")
        if t not in out:
            out.append(t)
    return out


def add_note(path: str, text: Any, kind: Optional[str] = None) -> Dict[str, Any]:
    """Append a `note` record {text, kind} to the run file at `path` and return it."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty note: give the text to record, e.g. 'lr 0.1 diverged; keep 0.03'")
    if len(text) > MAX_NOTE:
        raise ValueError(f"note too long ({len(text)} characters, at most {MAX_NOTE}): keep data in tracks")
    if kind is not None and not _KIND.match(kind):
        raise ValueError(f"bad note kind {kind!r}: one word such as {', '.join(KINDS)}")
    return appender.append_record(path, "note", {"text": redact_text(text), "kind": kind})


def tag_run(path: str, add: Iterable[Any] = (), remove: Iterable[Any] = ()) -> Dict[str, Any]:
    """Append a `tag` record {add, remove} to the run file at `path` and return it."""
    add, remove = check_tags(add), check_tags(remove)
    if not add and not remove:
        raise ValueError("no tag given: name at least one, e.g. keep or discard")
    return appender.append_record(path, "tag", {"add": [redact_text(t) for t in add],
                                                "remove": [redact_text(t) for t in remove]})
