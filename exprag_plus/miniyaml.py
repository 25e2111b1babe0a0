"""A strict reader for the YAML subset that task-schema files use.

Why it exists: exprag_plus has no runtime dependencies, yet hpcflow/MatFlow schemas are written in YAML.
A "mostly YAML" reader that guesses at what it does not understand would turn a typo into a wrong
command, so this one accepts a documented subset and raises `MiniYAMLError` (with line and column) on
everything else: it either reads a document as PyYAML does, or it refuses it.

The subset: block mappings and sequences (including `- key: v` items with continuation keys, and
sequences indented at the same column as their parent key), flow `[a, b]` / `{a: 1}` (nested, may span
lines), single- and double-quoted scalars on one line (YAML escapes in double quotes), plain scalars
(also multi-line, folded with spaces), `|` and `>` block scalars with `-`/`+` chomping and an optional
indentation digit, comments, and one optional leading `---`.

Refused with an error: anchors `&`, aliases `*`, tags `!`, directives `%`, merge keys `<<`, complex keys
`? `, flow collections as keys, a second document (`---`/`...` after content), tabs in indentation,
duplicate keys, bad indentation, quoted scalars spanning lines, control characters.

Scalars are resolved with the YAML 1.2 core schema, deliberately, not PyYAML's YAML 1.1 rules, so that a
value means the same thing in JSON, TOML and here. Where the two differ (PyYAML result in brackets):
`yes`/`no`/`on`/`off` stay strings [bools]; `010` is 10 [8]; `0o17` is 15 [string]; `0b101`, `1_000`,
`1:30` stay strings [5, 1000, 90]; `1e3`, `1.0e3`, `-.5` are floats [strings: 1.1 wants a dot, a signed
exponent, a digit before the dot when signed]; `2024-01-31` stays a string [a date]; `=` stays a string
[error]; a duplicate key (also `1` and `true`, equal in Python) is an error [the last one wins]. Where
PyYAML is stricter than YAML (a tab after a value, `?` inside a flow value) it errors and we read the
tab as a blank or refuse the `?`.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["MiniYAMLError", "loads", "loads_with_marks"]

Path = Tuple[Any, ...]
Marks = Dict[Path, Tuple[int, int]]


class MiniYAMLError(ValueError):
    """Text outside the subset, or malformed: `str()` is `source:line:column: problem` (1-based)."""

    def __init__(self, problem: str, line: int, column: int, source: str = "<string>") -> None:
        self.problem, self.line, self.column, self.source = problem, line, column, source
        super().__init__(f"{source}:{line}:{column}: {problem}")


def loads(text: str, source: str = "<string>") -> Any:
    """Parse one YAML document of the subset into dicts, lists and scalars."""
    return loads_with_marks(text, source)[0]


def loads_with_marks(text: str, source: str = "<string>") -> Tuple[Any, Marks]:
    """Like `loads`, plus where each key and list item starts, so callers can point at a line.

    `marks` maps a path of keys and indexes (e.g. `("actions", 0, "commands")`) to (line, column), 1-based.
    """
    parser = _Parser(text, source)
    value = parser.parse()
    return value, parser.marks


MAX_DEPTH = 100
_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_INT = re.compile(r"[-+]?[0-9]+")
_OCT = re.compile(r"0o[0-7]+")
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN = re.compile(r"\.(?:nan|NaN|NAN)")
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x85\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]")
_ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
            "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85",
            "_": "\xa0", "L": "\u2028", "P": "\u2029"}
_HEX_WIDTH = {"x": 2, "u": 4, "U": 8}
_START_PROBLEMS = {
    "&": "anchors ('&') are not supported; repeat the value instead",
    "*": "aliases ('*') are not supported; repeat the value instead",
    "!": "tags ('!') are not supported; write the plain value (quote it to force a string)",
    "%": "'%' cannot start a value (directives are not supported); quote the value",
    "@": "'@' is reserved and cannot start a plain value; quote the value",
    "`": "'`' is reserved and cannot start a plain value; quote the value",
}
_WS = " \t"


def resolve_plain(text: str) -> Any:
    """YAML 1.2 core schema resolution of an unquoted scalar."""
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _OCT.fullmatch(text):
        return int(text[2:], 8)
    if _HEX.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return float("-inf") if text[0] == "-" else float("inf")
    if _NAN.fullmatch(text):
        return float("nan")
    return text


def _ends_value(line: str, i: int, extra: str = "") -> bool:
    """True when the ':' at line[i] is a value indicator (followed by a blank or the line's end)."""
    return i + 1 == len(line) or line[i + 1] in _WS + extra


class _Parser:
    """Recursive descent over lines; each block method returns (value, first unconsumed line)."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        if text.startswith("\ufeff"):
            text = text[1:]
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        self.lines: List[str] = text.split("\n")
        self.marks: Marks = {}
        self._marker_line = -1
        bad = _BAD_CHARS.search(text)
        if bad:
            ln = text.count("\n", 0, bad.start())
            col = bad.start() - (text.rfind("\n", 0, bad.start()) + 1)
            raise self._err(f"character U+{ord(bad.group()):04X} is not allowed; remove it", ln, col)

    def _err(self, problem: str, ln: int, col: int) -> MiniYAMLError:
        return MiniYAMLError(problem, ln + 1, col + 1, self.source)

    # -- lines ---------------------------------------------------------------------------------------
    def _indent(self, ln: int) -> Optional[int]:
        """Column of line ln's first significant character, None for blank and comment-only lines."""
        line = self.lines[ln]
        body = line.lstrip(_WS)
        if not body or body[0] == "#":
            return None
        lead = line[: len(line) - len(body)]
        if "\t" in lead:
            raise self._err("tab character in indentation; indent with spaces only", ln, lead.index("\t"))
        if not lead and body[:3] in ("---", "...") and body[3:4] in ("", " ", "\t") \
                and ln != self._marker_line:
            raise self._err("a second document ('---' or '...') is not supported; "
                            "put one document in each file", ln, 0)
        return len(lead)

    def _next(self, ln: int) -> Tuple[Optional[int], int]:
        while ln < len(self.lines):
            col = self._indent(ln)
            if col is not None:
                return ln, col
            ln += 1
        return None, -1

    @staticmethod
    def _is_dash(line: str, col: int) -> bool:
        return line[col] == "-" and (col + 1 == len(line) or line[col + 1] in _WS)

    def _rest_ok(self, ln: int, col: int, what: str) -> None:
        """Only blanks or a comment may follow a complete value on its line."""
        rest = self.lines[ln][col:]
        body = rest.lstrip(_WS)
        if body and not (body[0] == "#" and len(body) < len(rest)):
            raise self._err(f"unexpected text after {what}", ln, col + len(rest) - len(body))

    # -- document ------------------------------------------------------------------------------------
    def parse(self) -> Any:
        first = next((i for i, s in enumerate(self.lines) if s.lstrip(_WS)[:1] not in ("", "#")), None)
        if first is None:
            return None
        line = self.lines[first]
        if line.startswith("---") and line[3:4] in ("", " ", "\t"):
            self._marker_line = first
            self._rest_ok(first, 3, "'---' (start the document on the next line)")
            first += 1
        ln, col = self._next(first)
        if ln is None:
            return None
        self.marks[()] = (ln + 1, col + 1)
        value, nxt = self._node(ln, col, -1, (), True)
        rest, rcol = self._next(nxt)
        if rest is not None:
            raise self._err("unexpected content after the document's top level; check its indentation",
                            rest, rcol)
        return value

    def _depth(self, path: Path, ln: int, col: int) -> None:
        """Refuse deep nesting with an error rather than a RecursionError (each level costs a few frames)."""
        if len(path) > MAX_DEPTH:
            raise self._err(f"nested more than {MAX_DEPTH} levels deep; flatten the document", ln, col)

    def _check_start(self, ln: int, col: int, flow: bool = False) -> None:
        line = self.lines[ln]
        ch, nxt = line[col], line[col + 1: col + 2]
        blank_next = nxt in ("", " ", "\t")
        if ch in _START_PROBLEMS:
            raise self._err(_START_PROBLEMS[ch], ln, col)
        if ch == "?" and (blank_next or flow):
            raise self._err("complex mapping keys ('? ') are not supported; use a plain 'key: value' (quote a "
                            "value that starts with '?')", ln, col)
        if ch == "#":
            raise self._err("'#' starts a comment only after a space; quote a value that starts with '#'", ln, col)
        if ch == ":" and (blank_next or flow):
            raise self._err("':' with no key before it; write 'key: value'", ln, col)
        if ch in ",]}":
            raise self._err(f"unexpected '{ch}'; quote the value if it is text", ln, col)
        if flow and ch == "-" and blank_next:
            raise self._err("'- ' list items are not allowed inside [ ] or { }; separate items with ','",
                            ln, col)
        if flow and ch in "|>":
            raise self._err(f"'{ch}' cannot start a value inside [ ] or {{ }} (block scalars go in block "
                            f"context); quote the value", ln, col)

    # -- block structures ----------------------------------------------------------------------------
    def _node(self, ln: int, col: int, parent: int, path: Path, block_ok: bool) -> Tuple[Any, int]:
        line = self.lines[ln]
        self._depth(path, ln, col)
        self._check_start(ln, col)
        if self._is_dash(line, col):
            if not block_ok:
                raise self._err("a list cannot start on the same line as its key; start it on the next "
                                "line", ln, col)
            return self._block_seq(ln, col, path)
        ch = line[col]
        if ch in "[{":
            value, k, c = self._flow(ln, col, path)
            rest = self.lines[k][c:].lstrip(_WS)
            if rest.startswith(":"):
                raise self._err("a flow collection as a mapping key is not supported", ln, col)
            self._rest_ok(k, c, "a closing bracket")
            return value, k + 1
        if ch in "|>":
            return self._block_scalar(ln, col, parent)
        found = self._key(ln, col)
        if found is not None:
            if not block_ok:
                raise self._err("': ' inside a value (a mapping cannot start on the same line as its key); "
                                "quote the value, or put the mapping on the next line, indented", ln, found[1] - 1)
            return self._block_map(ln, col, path)
        return self._scalar(ln, col, parent)

    def _key(self, ln: int, col: int) -> Optional[Tuple[Any, int, Optional[str]]]:
        """(key, column after its ':', plain text or None) when line ln holds `key:` at col."""
        line = self.lines[ln]
        if line[col] in "'\"":
            value, end = self._quoted(ln, col)
            j = end
            while j < len(line) and line[j] in _WS:
                j += 1
            if j < len(line) and line[j] == ":" and _ends_value(line, j):
                return value, j + 1, None
            return None
        if line[col] in "[{|>":
            return None
        for i in range(col, len(line)):
            ch = line[i]
            if ch == ":" and _ends_value(line, i):
                text = line[col:i].rstrip(_WS)
                return resolve_plain(text), i + 1, text
            if ch == "#" and i > col and line[i - 1] in _WS:
                return None
        return None

    def _block_map(self, ln: int, m: int, path: Path) -> Tuple[Dict[Any, Any], int]:
        result: Dict[Any, Any] = {}
        while True:
            line = self.lines[ln]
            self._check_start(ln, m)
            if self._is_dash(line, m):
                raise self._err("a list item where a 'key: value' was expected; indent the list under its "
                                "key", ln, m)
            found = self._key(ln, m)
            if found is None:
                raise self._err(f"expected 'key: value' here (this line continues the mapping whose keys "
                                f"start at column {m + 1})", ln, m)
            key, after, plain = found
            if plain == "<<":
                raise self._err("merge keys ('<<') are not supported; write the keys out", ln, m)
            kpath = path + (key,)
            if key in result:
                first = self.marks.get(kpath, (0, 0))[0]
                raise self._err(f"duplicate key {key!r} (first at line {first}); each key may appear once",
                                ln, m)
            self.marks[kpath] = (ln + 1, m + 1)
            result[key], nxt = self._value(ln, after, m, kpath, True)
            nl, ind = self._next(nxt)
            if nl is None:
                return result, len(self.lines)
            if ind < m:
                return result, nl
            if ind > m:
                raise self._err(f"bad indentation: expected a key at column {m + 1} or a line indented "
                                f"less", nl, ind)
            ln = nl

    def _value(self, ln: int, after: int, m: int, path: Path, indentless: bool) -> Tuple[Any, int]:
        """The value after `key:` or `-` at indent m: on the same line, or the block below it."""
        line = self.lines[ln]
        j = after
        while j < len(line) and line[j] in _WS:
            j += 1
        if j < len(line) and line[j] != "#":
            return self._node(ln, j, m, path, False)
        nl, ind = self._next(ln + 1)
        if nl is not None:
            if ind > m:
                return self._node(nl, ind, m, path, True)
            if indentless and ind == m and self._is_dash(self.lines[nl], m):
                return self._block_seq(nl, m, path)
        return None, ln + 1

    def _block_seq(self, ln: int, m: int, path: Path) -> Tuple[List[Any], int]:
        result: List[Any] = []
        while True:
            line = self.lines[ln]
            ipath = path + (len(result),)
            j = m + 1
            while j < len(line) and line[j] in _WS:
                j += 1
            if j < len(line) and line[j] != "#":
                self.marks[ipath] = (ln + 1, j + 1)
                value, nxt = self._node(ln, j, m, ipath, True)
            else:
                self.marks[ipath] = (ln + 1, m + 1)
                value, nxt = self._value(ln, j, m, ipath, False)
            result.append(value)
            nl, ind = self._next(nxt)
            if nl is None:
                return result, len(self.lines)
            if ind == m and self._is_dash(self.lines[nl], m):
                ln = nl
                continue
            if ind > m:
                raise self._err(f"bad indentation: expected '- ' at column {m + 1} or a line indented less",
                                nl, ind)
            return result, nl

    # -- scalars -------------------------------------------------------------------------------------
    def _scalar(self, ln: int, col: int, parent: int) -> Tuple[Any, int]:
        line = self.lines[ln]
        if line[col] in "'\"":
            value, end = self._quoted(ln, col)
            self._rest_ok(ln, end, "a quoted value")
            return value, ln + 1
        text, commented = _plain_line(line, col)
        parts, last, blanks, k = [text], ln, 0, ln + 1
        while not commented and k < len(self.lines):
            raw = self.lines[k]
            if not raw.strip(_WS):
                blanks, k = blanks + 1, k + 1
                continue
            ind = self._indent(k)
            if ind is None or ind <= parent:
                break
            if self._is_dash(raw, ind):
                raise self._err("a '- ' line continuing a plain value is ambiguous; quote the value or use "
                                "a block scalar '|'", k, ind)
            seg, commented = _plain_line(raw, ind)
            colon = re.search(r":(?:[ \t]|$)", seg)
            if colon:
                raise self._err("': ' in a value continued from the line above; quote the value, or fix the "
                                "indentation if this is a new key", k, ind + colon.start())
            parts += ["\n" * blanks if blanks else " ", seg]
            blanks, last, k = 0, k, k + 1
        return resolve_plain("".join(parts)), last + 1

    def _quoted(self, ln: int, col: int) -> Tuple[str, int]:
        """A one-line quoted scalar starting at col: (text, column after the closing quote)."""
        line = self.lines[ln]
        out: List[str] = []
        i = col + 1
        if line[col] == "'":
            while True:
                j = line.find("'", i)
                if j < 0:
                    raise self._err("unterminated single-quoted value; a quoted value must end on its line "
                                    "(use a block scalar '|' for multi-line text)", ln, col)
                out.append(line[i:j])
                if line[j + 1: j + 2] == "'":
                    out.append("'")
                    i = j + 2
                    continue
                return "".join(out), j + 1
        while i < len(line):
            ch = line[i]
            if ch == '"':
                return "".join(out), i + 1
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            esc = line[i + 1: i + 2]
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                i += 2
            elif esc and esc in _HEX_WIDTH:
                digits = line[i + 2: i + 2 + _HEX_WIDTH[esc]]
                try:
                    if len(digits) != _HEX_WIDTH[esc] or not all(c in "0123456789abcdefABCDEF" for c in digits):
                        raise ValueError
                    out.append(chr(int(digits, 16)))
                except (ValueError, OverflowError):
                    raise self._err(f"bad escape '\\{esc}{digits}' in a double-quoted value", ln, i) from None
                i += 2 + len(digits)
            elif not esc:
                raise self._err("a double-quoted value continued on the next line is not supported; keep it "
                                "on one line or use a block scalar '|'", ln, i)
            else:
                raise self._err(f"unknown escape '\\{esc}' in a double-quoted value (write '\\\\' for a "
                                "backslash)", ln, i)
        raise self._err("unterminated double-quoted value; a quoted value must end on its line (use a block "
                        "scalar '|' for multi-line text)", ln, col)

    def _block_scalar(self, ln: int, col: int, parent: int) -> Tuple[str, int]:
        """`|` / `>` scalars, following PyYAML's scanner step by step so both read the same text."""
        lines, last = self.lines, len(self.lines) - 1
        line = lines[ln]
        folded = line[col] == ">"
        chomp: Optional[str] = None
        incr: Optional[int] = None
        i = col + 1
        while i < len(line) and line[i] in "+-0123456789":
            ch = line[i]
            if ch in "+-" and chomp is None:
                chomp = ch
            elif ch in "123456789" and incr is None:
                incr = int(ch)
            else:
                raise self._err(f"bad block scalar indicator '{ch}' (use one of '-'/'+' and one digit 1-9)",
                                ln, i)
            i += 1
        self._rest_ok(ln, i, "a block scalar indicator (the text starts on the next line, indented)")
        pos = [ln + 1, 0] if ln < last else [ln, len(line)]

        def peek() -> str:
            s = lines[pos[0]]
            return s[pos[1]] if pos[1] < len(s) else ("\n" if pos[0] < last else "\0")

        def forward() -> None:
            if pos[1] < len(lines[pos[0]]):
                pos[1] += 1
            elif pos[0] < last:
                pos[0], pos[1] = pos[0] + 1, 0

        def breaks_to(indent: int) -> List[str]:
            out: List[str] = []
            while pos[1] < indent and peek() == " ":
                forward()
            while peek() == "\n":
                out.append("\n")
                forward()
                while pos[1] < indent and peek() == " ":
                    forward()
            return out

        min_indent = max(parent + 1, 1)
        if incr is None:
            breaks: List[str] = []
            max_indent = 0
            while peek() in " \n":
                if peek() == "\n":
                    breaks.append("\n")
                    forward()
                else:
                    forward()
                    max_indent = max(max_indent, pos[1])
            indent = max(min_indent, max_indent)
        else:
            indent = min_indent + incr - 1
            breaks = breaks_to(indent)
        chunks: List[str] = []
        line_break = ""
        while pos[1] == indent and peek() != "\0":
            chunks.extend(breaks)
            leading_non_space = peek() not in " \t"
            chunks.append(lines[pos[0]][pos[1]:])
            pos[1] = len(lines[pos[0]])
            line_break = "\n" if peek() == "\n" else ""
            forward()
            breaks = breaks_to(indent)
            if not (pos[1] == indent and peek() != "\0"):
                break
            if folded and line_break == "\n" and leading_non_space and peek() not in " \t":
                if not breaks:
                    chunks.append(" ")
            else:
                chunks.append(line_break)
        if chomp != "-":
            chunks.append(line_break)
        if chomp == "+":
            chunks.extend(breaks)
        return "".join(chunks), (len(lines) if peek() == "\0" else pos[0])

    # -- flow collections ----------------------------------------------------------------------------
    def _flow(self, ln: int, col: int, path: Path) -> Tuple[Any, int, int]:
        """A `[...]` or `{...}` starting at (ln, col), possibly over several lines."""
        self._fpos = [ln, col]
        value = self._flow_node(path, key=False)
        return value, self._fpos[0], self._fpos[1]

    def _fpeek(self) -> str:
        ln, col = self._fpos
        s = self.lines[ln]
        return s[col] if col < len(s) else ("\n" if ln < len(self.lines) - 1 else "\0")

    def _fskip(self) -> None:
        while True:
            ch = self._fpeek()
            ln, col = self._fpos
            if ch in _WS:
                self._fpos[1] += 1
            elif ch == "\n":
                self._fpos = [ln + 1, 0]
                self._indent(ln + 1)
            elif ch == "#" and (col == 0 or self.lines[ln][col - 1] in _WS):
                self._fpos[1] = len(self.lines[ln])
            else:
                return

    def _flow_node(self, path: Path, key: bool) -> Any:
        ln, col = self._fpos
        self._depth(path, ln, col)
        ch = self._fpeek()
        if ch == "\0":
            raise self._err("unterminated flow collection: a '[' or '{' is never closed", ln, col)
        if ch in "\n":
            raise self._err("expected a value", ln, col)
        self._check_start(ln, col, flow=True)
        if ch == "[":
            return self._flow_seq(path)
        if ch == "{":
            return self._flow_map(path)
        if ch in "'\"":
            value, self._fpos[1] = self._quoted(ln, col)
            return value
        line = self.lines[ln]
        i = col
        while i < len(line):
            c = line[i]
            if c in ",[]{}" or (c == ":" and _ends_value(line, i, ",[]{}")):
                break
            if c == "?":
                raise self._err("'?' inside a value in [ ] or { } is not supported (PyYAML reads it "
                                "differently); quote the value", ln, i)
            if c == "#" and line[i - 1] in _WS:
                break
            i += 1
        text = line[col:i].rstrip(_WS)
        if key and text == "<<":
            raise self._err("merge keys ('<<') are not supported; write the keys out", ln, col)
        self._fpos[1] = col + len(text)
        return resolve_plain(text)

    def _flow_seq(self, path: Path) -> List[Any]:
        open_ln, open_col = self._fpos
        self._fpos[1] += 1
        items: List[Any] = []
        while True:
            self._fskip()
            ln, col = self._fpos
            ch = self._fpeek()
            if ch == "]":
                self._fpos[1] += 1
                return items
            if ch == "\0":
                raise self._err("unterminated '['", open_ln, open_col)
            ipath = path + (len(items),)
            self.marks[ipath] = (ln + 1, col + 1)
            value = self._flow_node(ipath, key=False)
            end_ln = self._fpos[0]
            self._fskip()
            if self._fpeek() == ":":
                self._same_line(end_ln)
                if isinstance(value, (list, dict)):
                    raise self._err("a flow collection as a mapping key is not supported", ln, col)
                self._fpos[1] += 1
                self._fskip()
                value = {value: None if self._fpeek() in ",]" else self._flow_node(ipath + (value,), False)}
                self._fskip()
            items.append(value)
            self._flow_sep("]", open_ln, open_col)

    def _flow_map(self, path: Path) -> Dict[Any, Any]:
        open_ln, open_col = self._fpos
        self._fpos[1] += 1
        result: Dict[Any, Any] = {}
        while True:
            self._fskip()
            ln, col = self._fpos
            ch = self._fpeek()
            if ch == "}":
                self._fpos[1] += 1
                return result
            if ch == "\0":
                raise self._err("unterminated '{'", open_ln, open_col)
            if ch in "[{":
                raise self._err("a flow collection as a mapping key is not supported", ln, col)
            key = self._flow_node(path, key=True)
            kpath = path + (key,)
            if key in result:
                raise self._err(f"duplicate key {key!r}; each key may appear once", ln, col)
            self.marks[kpath] = (ln + 1, col + 1)
            end_ln = self._fpos[0]
            self._fskip()
            value = None
            if self._fpeek() == ":":
                self._same_line(end_ln)
                self._fpos[1] += 1
                self._fskip()
                if self._fpeek() not in ",}":
                    value = self._flow_node(kpath, key=False)
                    self._fskip()
            result[key] = value
            self._flow_sep("}", open_ln, open_col)

    def _same_line(self, key_ln: int) -> None:
        if self._fpos[0] != key_ln:
            raise self._err("a ':' must be on the same line as its key", self._fpos[0], self._fpos[1])

    def _flow_sep(self, close: str, open_ln: int, open_col: int) -> None:
        ch = self._fpeek()
        if ch == "\0":
            raise self._err(f"unterminated '{'[' if close == ']' else '{'}'", open_ln, open_col)
        if ch == ",":
            self._fpos[1] += 1
        elif ch != close:
            ln, col = self._fpos
            raise self._err(f"expected ',' or '{close}' (items need commas; a plain value cannot continue on "
                            f"the next line inside brackets)", ln, col)


def _plain_line(line: str, start: int) -> Tuple[str, bool]:
    """The plain text of line from start up to a comment: (text, whether a comment ended it)."""
    for i in range(start + 1, len(line)):
        if line[i] == "#" and line[i - 1] in _WS:
            return line[start:i].rstrip(_WS), True
    return line[start:].rstrip(_WS), False

