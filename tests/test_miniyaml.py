"""miniyaml against PyYAML on a corpus, its deliberate YAML 1.2 choices, and every refused construct."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from exprag_plus import miniyaml
from exprag_plus.miniyaml import MiniYAMLError, loads, loads_with_marks

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "schemas"

SEED_COMMAND_STRING = """\
objective: t1
inputs: ...
outputs: ...
actions:
  - environments:
      any: python_env
    commands:
      - command: COMMAND_STRING
"""

CORPUS = [
    # the seed document's examples, byte for byte
    SEED_COMMAND_STRING,
    *(p.read_text() for p in sorted(EXAMPLES.glob("*.yaml"))),
    # mappings and sequences
    "a: 1\nb: two\nc: 3.5\n",
    "a:\n  b:\n    c: deep\n  d: [1, 2]\n",
    "- a\n- b\n- - c\n  - d\n",
    "key:\n- x\n- y\nnext: z\n",
    "- name: a\n  value: 1\n- name: b\n  value: 2\n",
    "-   spaced: 1\n    more: 2\n",
    "- \n  nested: after empty dash\n-\n  - inner\n",
    "list:\n  - a: 1\n    b:\n      - c\n      - d: e\n",
    "empty:\nalso_empty: ~\nnull_word: null\nafter: 1\n",
    "top:\n    four: spaces\n    more:\n        eight: spaces\n",
    "a key with spaces: v\n'quoted key': w\n\"dq key\": x\n",
    "7: int key\n2.5: float key\ntrue: bool key\n",
    # scalars
    "a: 42\nb: -17\nc: +3\nd: 0\ne: 1.5\nf: -0.25\ng: .5\nh: 3.\ni: 1.0e+3\nj: 0x1F\n",
    "a: .inf\nb: -.Inf\nc: +.INF\nd: .nan\ne: .NaN\n",
    "a: true\nb: False\nc: TRUE\nd: null\ne: Null\nf: NULL\ng: ~\n",
    "a: 'single'\nb: \"double\"\nc: 'it''s'\nd: \"say \\\"hi\\\"\"\ne: ''\nf: \"\"\n",
    "a: \"tab\\there\"\nb: \"nl\\nx\"\nc: \"\\u00e9\\x41\\U0001F600\"\nd: \"back\\\\slash\"\ne: \"\\/\"\n",
    "a: '123'\nb: \"true\"\nc: 'null'\n",
    "cmd: echo $((<<parameter:p1>> + 1))\nout: <<parameter:p2>>\n",
    "url: http://example.com:8080/path?q=1#frag\nratio: 1:x\ntime: a:b:c\n",
    "hash: a#b\ncomment: value # a comment: with colon\nboth: 'x' # c\n",
    "a: text with 'quotes' inside\nb: text with \"dq\" inside\nc: don't\n",
    "a: -dash\nb: ?question\nc: :colon\nd: <angle>\ne: a,b\n",
    "a: multi\n  line\n  plain\nb: x\n",
    "- first\n  second\n\n  third\n",
    "a: v   \nb: w  # c\n",
    # comments and blank lines
    "# leading comment\n\na: 1 # trailing\n\n# between\nb: 2\n# end\n",
    "a:\n  # comment inside\n  b: 1\n    # odd comment indent\n  c: 2\n",
    "---\na: 1\n",
    "--- # doc start\n- x\n",
    # flow collections
    "a: [1, 2, 3]\nb: []\nc: {}\nd: {x: 1, y: [a, b]}\n",
    "a: [[1, 2], [3, [4, 5]]]\nb: {k: {n: {m: v}}}\n",
    "a: [one two, 'three, four', \"five\"]\nb: {\"json\": 1, \"style\":[true,null]}\n",
    "a: [1, 2,\n    3, 4]\nb: {x: 1,\n    y: 2}\n",
    "a: [a, b, ]\nb: {x: 1, }\nc: {novalue}\nd: [k: v]\n",
    "a: [x # comment\n   , y]\n",
    "[1, 2, 3]\n",
    "{a: 1}\n",
    # block scalars
    "a: |\n  line 1\n  line 2\nb: 2\n",
    "a: |-\n  strip\n\n\nb: |+\n  keep\n\n\nc: |\n  clip\n\n\n",
    "a: >\n  folded\n  text\n\n  next para\n    indented\n  back\n",
    "a: >-\n  one\n  two\n",
    "- |\n  in a list\n- >+\n  kept\n\n",
    "a: |2\n    two extra\n  base\n",
    "a: |\n\n  leading blank\n",
    "a: |\n  # not a comment\n  x: not a key\n",
    "a: |\nb: empty block\n",
    "a: |\n  no final newline",
    "a:\n  - |\n    text\n  - x\n",
    # odd but valid documents
    "",
    "# only a comment\n",
    "plain scalar document\n",
    "'quoted document'\n",
    "- \n- ~\n-\n",
]


def same(a: Any, b: Any) -> bool:
    """Equality that also checks types (True == 1 in Python) and treats NaN as equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def test_corpus_is_large_and_includes_the_seed_examples() -> None:
    assert len(CORPUS) >= 40
    assert len(list(EXAMPLES.glob("seed_*.yaml"))) == 3


@pytest.mark.parametrize("doc", CORPUS, ids=[f"doc{i}" for i in range(len(CORPUS))])
def test_reads_like_pyyaml(doc: str) -> None:
    expected = yaml.safe_load(doc)
    got = loads(doc)
    assert same(got, expected), (got, expected)


def test_seed_example_with_comment_after_value() -> None:
    doc = (EXAMPLES / "seed_output_used_downstream.yaml").read_text()
    got = loads(doc)
    assert got["actions"][1]["commands"][0]["command"] == "echo <<parameter:p2>>"
    assert got["actions"][0]["commands"][0] == {"command": "echo $((<<parameter:p1>> + 1))",
                                                "stdout": "<<parameter:p2>>"}


# -- deliberate YAML 1.2 core-schema choices (PyYAML reads YAML 1.1) ----------------------------------------
@pytest.mark.parametrize("text, ours, pyyaml", [
    ("yes", "yes", True), ("no", "no", False), ("on", "on", True), ("Off", "Off", False),
    ("010", 10, 8), ("0o17", 15, "0o17"), ("0b101", "0b101", 5), ("1_000", "1_000", 1000),
    ("1:30", "1:30", 90), ("1e3", 1000.0, "1e3"), ("2024-01-31", "2024-01-31", None),
])
def test_yaml12_scalars_where_pyyaml_differs(text: str, ours: Any, pyyaml: Any) -> None:
    got = loads(f"v: {text}")["v"]
    assert same(got, ours)
    theirs = yaml.safe_load(f"v: {text}")["v"]
    if pyyaml is None:  # a datetime.date in PyYAML
        assert not isinstance(theirs, str)
    else:
        assert same(theirs, pyyaml)


def test_duplicate_key_is_an_error_where_pyyaml_keeps_the_last() -> None:
    assert yaml.safe_load("a: 1\na: 2\n") == {"a": 2}
    with pytest.raises(MiniYAMLError) as e:
        loads("a: 1\na: 2\n")
    assert (e.value.line, e.value.column) == (2, 1)
    assert "duplicate key 'a' (first at line 1)" in str(e.value)


def test_marks_point_at_keys_and_items() -> None:
    value, marks = loads_with_marks("a:\n  - x: 1\n    y: [p, q]\n", source="f.yaml")
    assert value == {"a": [{"x": 1, "y": ["p", "q"]}]}
    assert marks[("a",)] == (1, 1)
    assert marks[("a", 0)] == (2, 5)
    assert marks[("a", 0, "y")] == (3, 5)
    assert marks[("a", 0, "y", 1)] == (3, 12)


def test_crlf_and_bom_are_accepted() -> None:
    assert loads("\ufeffa: 1\r\nb: |\r\n  x\r\n") == {"a": 1, "b": "x\n"}


# -- refused constructs: an error with line and column, never a silent misread ----------------------------
@pytest.mark.parametrize("doc, line, column, words", [
    ("a: &anchor 1\n", 1, 4, "anchors"),
    ("a: 1\nb: *alias\n", 2, 4, "aliases"),
    ("a: !!str 1\n", 1, 4, "tags"),
    ("- !custom x\n", 1, 3, "tags"),
    ("a: 1\n---\nb: 2\n", 2, 1, "second document"),
    ("a: 1\n...\n", 2, 1, "second document"),
    ("--- a: 1\n", 1, 5, "unexpected text"),
    ("%YAML 1.2\n---\na: 1\n", 1, 1, "directives"),
    ("a:\n\tb: 1\n", 2, 1, "tab character in indentation"),
    ("a: 1\na: 2\n", 2, 1, "duplicate key"),
    ("a: {x: 1, x: 2}\n", 1, 11, "duplicate key"),
    ("a:\n  b:\n    c: 1\n   d: 2\n", 4, 4, "bad indentation: expected a key at column 3"),
    ("a:\n  - x: 1\n   - y\n", 3, 4, "bad indentation: expected '- ' at column 3"),
    ("a:\n  b: 1\n   c: 2\n", 3, 5, "': ' in a value continued from the line above"),
    ("a:\n  - 1\n   - 2\n", 3, 4, "'- ' line continuing a plain value is ambiguous"),
    ("1: a\ntrue: b\n", 2, 1, "duplicate key True"),
    ("a: 1\n  b: 2\n", 2, 4, "': ' in a value continued"),
    ("- a\n - b\n", 2, 2, "'- ' line continuing"),
    ("a: 1\n- b\n", 2, 1, "a list item where a 'key: value' was expected"),
    ("? complex\n: key\n", 1, 1, "complex mapping keys"),
    ("[a, b]: c\n", 1, 1, "flow collection as a mapping key"),
    ("a: b: c\n", 1, 5, "': ' inside a value"),
    ("a: - b\n", 1, 4, "a list cannot start on the same line"),
    ("<<: {x: 1}\n", 1, 1, "merge keys"),
    ("a: {<<: {x: 1}}\n", 1, 5, "merge keys"),
    ("a: 'unterminated\n", 1, 4, "unterminated single-quoted"),
    ("a: \"multi\n  line\"\n", 1, 4, "unterminated double-quoted"),
    ("a: \"bad \\q escape\"\n", 1, 9, "unknown escape"),
    ("a: [1, 2\n", 1, 4, "unterminated '['"),
    ("a: [1 2\n  3]\n", 2, 3, "expected ',' or ']'"),
    ("a: {x: 1\n", 1, 4, "unterminated '{'"),
    ("a: [- x]\n", 1, 5, "'- ' list items are not allowed"),
    ("a: [?x]\n", 1, 5, "complex mapping keys"),
    ("a: [x?y]\n", 1, 6, "'?' inside a value"),
    ("a: [:x]\n", 1, 5, "':' with no key"),
    ("a: [x,#y]\n", 1, 7, "'#' starts a comment only after a space"),
    ("a: [|x]\n", 1, 5, "'|' cannot start a value inside"),
    ("a: {x\n  : 1}\n", 2, 3, "same line as its key"),
    ("a: [1] extra\n", 1, 8, "unexpected text after a closing bracket"),
    ("a: 'q' extra\n", 1, 8, "unexpected text after a quoted value"),
    ("a: |x\n  y\n", 1, 5, "unexpected text after a block scalar indicator"),
    ("a: |0\n  y\n", 1, 5, "bad block scalar indicator"),
    ("a: |++\n  y\n", 1, 6, "bad block scalar indicator"),
    ("a: @x\n", 1, 4, "reserved"),
    ("a: `x`\n", 1, 4, "reserved"),
    ("a: %x\n", 1, 4, "'%' cannot start a value"),
    ("a: ]\n", 1, 4, "unexpected ']'"),
    ("a: 1\nb\n", 2, 1, "expected 'key: value'"),
    ("a: 1\n b: 2\nc: 3\n", 2, 3, "': ' in a value continued"),
    ("a: \x07\n", 1, 4, "U+0007"),
    ("  a: 1\nb: 2\n", 2, 1, "unexpected content after the document"),
])
def test_refused_constructs_name_line_and_column(doc: str, line: int, column: int, words: str) -> None:
    with pytest.raises(MiniYAMLError) as e:
        loads(doc, source="bad.yaml")
    err = e.value
    assert words in str(err), str(err)
    assert (err.line, err.column) == (line, column), str(err)
    assert str(err).startswith(f"bad.yaml:{line}:{column}: ")
    assert "\n" not in str(err)
    assert isinstance(err, ValueError)


def test_pyyaml_would_misread_what_we_refuse() -> None:
    # Each of these loads "successfully" in PyYAML but means something the subset does not support.
    assert yaml.safe_load("a: &x 1\nb: *x\n") == {"a": 1, "b": 1}
    assert yaml.safe_load("base: {x: 1}\nc:\n  <<: {x: 2}\n") == {"base": {"x": 1}, "c": {"x": 2}}
    for doc in ("a: &x 1\nb: *x\n", "c:\n  <<: {x: 2}\n"):
        with pytest.raises(MiniYAMLError):
            loads(doc)


def test_module_resolver_matches_documented_core_schema() -> None:
    assert miniyaml.resolve_plain("0x1f") == 31
    assert miniyaml.resolve_plain("-.inf") == float("-inf")
    assert miniyaml.resolve_plain("+12") == 12
    assert miniyaml.resolve_plain("٣") == "٣"  # non-ASCII digits stay text


@pytest.mark.parametrize("text", ["a: " + "[" * 3000 + "]" * 3000 + "\n",
                                  "".join(" " * i + "- \n" for i in range(3000)),
                                  "".join(" " * i + "a:\n" for i in range(3000))])
def test_deep_nesting_is_an_error_not_a_recursion_error(text: str) -> None:
    with pytest.raises(MiniYAMLError, match="nested more than 100 levels"):
        loads(text)
    assert loads("a: " + "[" * 100 + "]" * 100 + "\n")["a"]  # 100 levels still read
