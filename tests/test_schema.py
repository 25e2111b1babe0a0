"""Task schemas: the seed's examples, validation messages, task values, typed outputs, timeouts, sequences.

Everything runs real shell commands in real directories; nothing is mocked.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict

import pytest

from exprag_plus.schema import (
    NO_DEFAULT, ActionEnvironment, Command, Environment, SchemaAction, SchemaError, SchemaInput,
    SchemaOutput, TaskFailed, TaskResult, TaskSchema, expand_sequences, parse_value, python_env,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "schemas"


def schema(command: str, stdout: str = "<<parameter:p2>>", inputs: Any = ("p1",), outputs: Any = ("p2",),
           **extra: Any) -> TaskSchema:
    cmd: Dict[str, Any] = {"command": command, **extra}
    if stdout:
        cmd["stdout"] = stdout
    return TaskSchema.from_dict({"objective": "t1", "inputs": list(inputs), "outputs": list(outputs),
                                 "actions": [{"commands": [cmd]}]})


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def schema_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(SchemaError) as e:
        TaskSchema.from_file(write(tmp_path, text))
    message = str(e.value)
    assert "\n" not in message
    return message


# -- the seed document's three examples ------------------------------------------------------------------
def test_seed_one_action_yaml(tmp_path: Path) -> None:
    ts = TaskSchema.from_file(EXAMPLES / "seed_p1_to_p2.yaml")
    result = ts.run({"p1": 1}, tmp_path / "w")
    assert result.outputs == {"p2": 2}
    assert result.status == "ok" and result.error is None
    assert result.commands[0]["command"] == "echo $((1 + 1))"


def test_seed_one_action_python(tmp_path: Path) -> None:
    ts1 = TaskSchema(
        objective="t1",
        inputs=[SchemaInput("p1")],
        outputs=[SchemaInput("p2")],  # the seed passes a SchemaInput for an output: accepted
        actions=[
            SchemaAction(
                commands=[
                    Command(
                        command="echo $((<<parameter:p1>> + 1))",
                        stdout="<<parameter:p2>>"
                    )
                ],
            ),
        ],
    )
    assert ts1.run({"p1": 1}, tmp_path).outputs == {"p2": 2}
    assert ts1 == TaskSchema.from_file(EXAMPLES / "seed_p1_to_p2.yaml")


def test_seed_output_used_downstream_yaml(tmp_path: Path) -> None:
    ts = TaskSchema.from_file(EXAMPLES / "seed_output_used_downstream.yaml")
    result = ts.run({"p1": 1}, tmp_path)
    assert result.outputs == {"p2": 2}
    assert [c["command"] for c in result.commands] == ["echo $((1 + 1))", "echo 2"]
    assert result.commands[1]["stdout"] == "2\n"


def test_seed_output_used_downstream_python(tmp_path: Path) -> None:
    # As in the seed, whose Python version echoes p1 unchanged (its YAML adds 1): p2 is then 1.
    ts1 = TaskSchema(
        objective="t1",
        inputs=[SchemaInput("p1")],
        outputs=[SchemaInput("p2")],
        actions=[
            SchemaAction(commands=[Command(command="echo <<parameter:p1>>", stdout="<<parameter:p2>>")]),
            SchemaAction(commands=[Command(command="echo <<parameter:p2>>")]),  # p2 used as an action input
        ],
    )
    result = ts1.run({"p1": 1}, tmp_path)
    assert result.outputs == {"p2": 1}
    assert result.commands[1]["stdout"] == "1\n"


def test_seed_intermediate_parameter_yaml(tmp_path: Path) -> None:
    ts = TaskSchema.from_file(EXAMPLES / "seed_intermediate_p2.yaml")
    result = ts.run({"p1": 1}, tmp_path)
    assert result.outputs == {"p3": 3}  # p2 is intermediate: not a schema output
    assert [c["command"] for c in result.commands] == ["echo $((1 + 1))", "echo $((2 + 1))"]


def test_seed_intermediate_parameter_python(tmp_path: Path) -> None:
    ts1 = TaskSchema(
        objective="t1",
        inputs=[SchemaInput("p1")],
        outputs=[SchemaInput("p3")],
        actions=[
            SchemaAction(commands=[Command(command="echo $((<<parameter:p1>> + 1))",
                                           stdout="<<parameter:p2>>")]),
            SchemaAction(commands=[Command(command="echo $((<<parameter:p2>> + 1))",
                                           stdout="<<parameter:p3>>")]),
        ],
    )
    assert ts1.run({"p1": 1}, tmp_path).outputs == {"p3": 3}
    assert ts1 == TaskSchema.from_file(EXAMPLES / "seed_intermediate_p2.yaml")


def test_seed_environment_forms_are_equivalent(tmp_path: Path) -> None:
    hpcflow_form = """\
objective: t1
inputs:
  - parameter: p1
outputs:
  - parameter: p2
actions:
  - environments:
      any: python_env
    commands:
      - command: <<executable:python>> -c 'import sys; print(int(sys.argv[1]) * 10)' <<parameter:p1>>
        stdout: <<parameter:p2>>
"""
    list_form = hpcflow_form.replace("      any: python_env\n", "      - scope: any\n        environment: python_env\n")
    python_form = TaskSchema(
        objective="t1", inputs=["p1"], outputs=["p2"],
        actions=[SchemaAction(
            environments=[ActionEnvironment("python_env", scope="any")],
            commands=[Command("<<executable:python>> -c 'import sys; print(int(sys.argv[1]) * 10)' "
                              "<<parameter:p1>>", stdout="<<parameter:p2>>")])])
    a = TaskSchema.from_file(write(tmp_path, hpcflow_form, "a.yaml"))
    b = TaskSchema.from_file(write(tmp_path, list_form, "b.yaml"))
    assert a == b == python_form
    assert a.run({"p1": 4}, tmp_path / "w").outputs == {"p2": 40}
    assert python_env.executables["python"] in a.resolve_commands({"p1": 4})[0]


def test_json_and_toml_files_load_the_same_schema(tmp_path: Path) -> None:
    yaml_schema = TaskSchema.from_file(EXAMPLES / "seed_intermediate_p2.yaml")
    j = write(tmp_path, json.dumps(yaml_schema.to_dict()), "s.json")
    assert TaskSchema.from_file(j) == yaml_schema
    toml = """\
objective = "t1"
[[inputs]]
parameter = "p1"
[[outputs]]
parameter = "p3"
[[actions]]
[[actions.commands]]
command = "echo $((<<parameter:p1>> + 1))"
stdout = "<<parameter:p2>>"
[[actions]]
[[actions.commands]]
command = "echo $((<<parameter:p2>> + 1))"
stdout = "<<parameter:p3>>"
"""
    if sys.version_info >= (3, 11):
        assert TaskSchema.from_file(write(tmp_path, toml, "s.toml")) == yaml_schema


def test_toml_without_tomllib_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tomllib", None)  # what Python 3.9/3.10 look like
    with pytest.raises(SchemaError, match=r"TOML schema files need Python 3\.11\+ \(tomllib\).*use a \.yaml or "
                                          r"\.json file"):
        TaskSchema.from_file(write(tmp_path, 'objective = "t1"\n', "s.toml"))


def test_round_trip_and_shorthand(tmp_path: Path) -> None:
    ts = TaskSchema.from_file(EXAMPLES / "sweep_stats.yaml")
    assert TaskSchema.from_dict(ts.to_dict()) == ts
    assert ts.inputs[0] == SchemaInput("values", [1.5, 2.5, 4])
    assert ts.inputs[2].default is NO_DEFAULT and ts.inputs[2].required
    assert ts.outputs == (SchemaOutput("total"), SchemaOutput("summary"))


def test_default_none_is_a_real_default(tmp_path: Path) -> None:
    ts = TaskSchema(objective="t", inputs=[SchemaInput("x", default=None)], outputs=["y"],
                    actions=[SchemaAction([Command("printf '[%s]' \"$EXPRAG_PARAM_x\"", stdout="<<str(parameter:y)>>")])])
    assert not ts.inputs[0].required
    assert ts.resolve_inputs({}) == {"x": None}
    assert ts.run({}, tmp_path).outputs == {"y": "[null]"}  # the environment holds JSON for non-strings
    with pytest.raises(SchemaError, match=r"<<parameter:x>>: the value of parameter 'x' is not plain: it is empty;"):
        schema("printf '[%s]' <<parameter:x>>", inputs=[{"parameter": "x", "default": None}], outputs=["y"],
               stdout="<<str(parameter:y)>>").run({}, tmp_path)


# -- validation messages ---------------------------------------------------------------------------------
BASE = """\
objective: t1
inputs:
- p1
outputs:
- p2
actions:
- commands:
    - command: echo <<parameter:p1>>
      stdout: <<parameter:p2>>
"""


@pytest.mark.parametrize("old, new, where, words", [
    ("- commands:", "- comands:", "s.yaml:7:3: task schema 't1', actions[0].comands",
     "unknown key 'comands' in an action; did you mean 'commands'?"),
    ("      stdout", "      stdot", "s.yaml:9:7: task schema 't1', actions[0].commands[0].stdot",
     "unknown key 'stdot' in a command; did you mean 'stdout'?"),
    ("- p1\n", "- p1\n- p3\n", "s.yaml:4:3: task schema 't1', inputs[1]",
     "schema input 'p3' is not used by any action; remove it, or use <<parameter:p3>> in a command"),
    ("- p2\n", "- p2\n- p4\n", "s.yaml:6:3: task schema 't1', outputs[1]",
     "schema output 'p4' is not produced by any action; map a command's output to it"),
    ("echo <<parameter:p1>>", "echo <<parameter:p1>> <<parameter:p9>>",
     "s.yaml:8:7: task schema 't1', actions[0].commands[0].command",
     "parameter 'p9' has no source: it is not a schema input and no earlier command produces it"),
    ("echo <<parameter:p1>>", "echo <<parameter:p1>> <<foo:bar>>", "actions[0].commands[0].command",
     "unknown token kind 'foo' in <<foo:bar>>; tokens look like <<parameter:NAME>>"),
    ("echo <<parameter:p1>>", "echo <<parameter:p1>> <<name>>", "actions[0].commands[0].command",
     "<<name>> is neither a known token nor one of the command's variables (variables: none)"),
    ("echo <<parameter:p1>>", "<<executable:python>> <<parameter:p1>>", "actions[0].commands[0].command",
     "executable 'python' is not defined by the action's environments (labels: none: the action has no "
     "environments); add an environment that defines it, e.g. environments: {any: python_env}"),
    ("echo <<parameter:p1>>", "echo <<parameter:p1>", "actions[0].commands[0].command",
     "malformed token near '<<parameter:p1>'"),
    ("echo <<parameter:p1>>", "echo << parameter:p1>>", "actions[0].commands[0].command",
     "malformed token near '<< parameter:p1>>'"),
    ("echo <<parameter:p1>>", "'echo <<parameter: p1>>'", "actions[0].commands[0].command",
     "malformed token <<parameter: p1>>"),
    ("      stdout", "      args: [a]\n      stdout", "actions[0].commands[0].args",
     "the command has args but its string has no <<args>>; put <<args>> where the arguments belong"),
    ("      stdout", "      args: --x\n      stdout", "actions[0].commands[0].args",
     "args must be a list, got a string"),
    ("stdout: <<parameter:p2>>", "stdout: <<sum(parameter:p2)>>", "actions[0].commands[0].stdout",
     "function 'sum' in <<sum(parameter:p2)>> is not allowed in stdout/stderr"),
    ("stdout: <<parameter:p2>>", "stdout: <<parameter:p2.a>>", "actions[0].commands[0].stdout",
     "maps output into a part of a parameter"),
    ("stdout: <<parameter:p2>>", "stdout: x <<parameter:p2>>", "actions[0].commands[0].stdout",
     "'x <<parameter:p2>>' must be exactly one <<parameter:NAME>> token"),
    ("echo <<parameter:p1>>", "echo <<int(parameter:p1)>>", "actions[0].commands[0].command",
     "function 'int' in <<int(parameter:p1)>> is not allowed in commands; use one of sum(...), join(...)"),
    ("echo <<parameter:p1>>", 'echo <<join[sep=","](parameter:p1)>>', "actions[0].commands[0].command",
     "unknown option 'sep' in <<join[sep=\",\"](parameter:p1)>>; allowed: delim"),
    ("echo <<parameter:p1>>", 'echo <<join[delim="; "](parameter:p1)>>', "actions[0].commands[0].command",
     "the delimiter '; ' of <<join[delim=\"; \"](parameter:p1)>> is not plain; use a space, or letters"),
    ("echo <<parameter:p1>>", 'echo $EXPRAG_PARAM_p1 ${EXPRAG_PARAM_p9}', "actions[0].commands[0].command",
     "parameter 'p9' has no source: it is not a schema input and no earlier command produces it"),
    ("- commands:", "- environments: {any: pythn_env}\n  commands:",
     "s.yaml:7:18: task schema 't1', actions[0].environments.any",
     "unknown environment 'pythn_env'; did you mean 'python_env'?"),
    ("- commands:", "- environments: {processing: python_env}\n  commands:", "actions[0].environments.processing",
     "environment scope 'processing' is not supported; use 'any' or 'main'"),
    ("- p2\n", "- p1\n", "outputs[0]", "parameter 'p1' is both an input and an output"),
    ("- p1\n", "- p1\n- p1\n", "inputs[1]", "parameter 'p1' is listed twice in inputs"),
    ("- p1\n", "- 1p\n", "inputs[0]", "parameter name '1p' is not an identifier"),
    ("- p1\n", "- {parameter: p1, defualt: 3}\n", "inputs[0].defualt",
     "unknown key 'defualt' in an input; did you mean 'default'?"),
    ("objective: t1\n", "objective: t1\nversion: 2\n", "s.yaml:2:1: task schema 't1', version",
     "unknown key 'version' in a task schema"),
    ("objective: t1\n", "", "task schema", "a task schema is missing the key 'objective'"),
    ("inputs:\n- p1\n", "inputs: ...\n", "s.yaml:2:1: task schema 't1', inputs", "must be a list, got a string"),
    ("      stdout: <<parameter:p2>>\n", "      stdout: <<parameter:p2>>\n- commands:\n    - command: echo hi\n"
     "      stdout: <<parameter:p5>>\n", "s.yaml:12:7: task schema 't1', actions[1].commands[0].stdout",
     "parameter 'p5' is produced but is neither a schema output nor used by a later command"),
    ("      stdout: <<parameter:p2>>\n", "      stdout: <<parameter:p2>>\n    - command: echo x\n"
     "      stdout: <<parameter:p2>>\n", "actions[0].commands[1].stdout",
     "parameter 'p2' is already produced by actions[0].commands[0].stdout"),
    ("- p1\n", "- p1\nsequences:\n- {path: inputs.p9, values: [1]}\n", "sequences[0].path",
     "sequence path 'inputs.p9' is not a schema input"),
])
def test_invalid_schemas_name_what_and_where(tmp_path: Path, old: str, new: str, where: str, words: str) -> None:
    assert old in BASE
    message = schema_error(tmp_path, BASE.replace(old, new, 1))
    assert where in message, message
    assert words in message, message


def test_no_source_says_when_a_later_action_produces_it(tmp_path: Path) -> None:
    ts = {"objective": "t9", "inputs": ["p1"], "outputs": ["p3"], "actions": [
        {"commands": [{"command": "echo <<parameter:p2>>", "stdout": "<<parameter:p3>>"}]},
        {"commands": [{"command": "echo <<parameter:p1>>", "stdout": "<<parameter:p2>>"}]}]}
    with pytest.raises(SchemaError) as e:
        TaskSchema.from_dict(ts)
    assert str(e.value) == ("task schema 't9', actions[0].commands[0].command: parameter 'p2' has no source: "
                            "it is not a schema input and no earlier command produces it; it is produced only "
                            "later, by actions[1].commands[0].stdout: reorder the actions")


def test_no_source_in_args_points_at_the_arg() -> None:
    with pytest.raises(SchemaError, match=r"actions\[0\]\.commands\[0\]\.args\[1\]: parameter 'p7' has no source"):
        schema("echo <<parameter:p1>> <<args>>", args=["x", "--n=<<parameter:p7>>"])


def test_a_command_too_long_for_the_os_fails_the_task(tmp_path: Path) -> None:
    with pytest.raises(TaskFailed, match=r"actions\[0\]\.commands\[0\]: could not start .echo "):
        schema("echo <<parameter:p1>>").run({"p1": "x" * 3_000_000}, tmp_path)


def test_python_built_schemas_are_validated_too() -> None:
    with pytest.raises(SchemaError, match=r"^task schema 't1', inputs\[1\]: schema input 'p3' is not used"):
        TaskSchema("t1", [SchemaInput("p1"), SchemaInput("p3")], ["p2"],
                   [SchemaAction([Command("echo <<parameter:p1>>", stdout="<<parameter:p2>>")])])
    with pytest.raises(SchemaError, match=r"the schema has no actions"):
        TaskSchema("t1")
    with pytest.raises(SchemaError, match=r"objective must be a one-line, non-empty string"):
        TaskSchema("", actions=[SchemaAction([Command("true")])])


def test_yaml_syntax_errors_keep_file_line_and_column(tmp_path: Path) -> None:
    message = schema_error(tmp_path, BASE.replace("- p1\n", "- &a p1\n"))
    assert message.startswith(f"{tmp_path / 's.yaml'}:3:3: anchors ('&') are not supported")


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="unsupported schema file type '.txt'"):
        TaskSchema.from_file(write(tmp_path, "x", "s.txt"))
    with pytest.raises(SchemaError, match="cannot read the schema file"):
        TaskSchema.from_file(tmp_path / "missing.yaml")
    with pytest.raises(SchemaError, match=r"s\.json:2:1: invalid JSON"):
        TaskSchema.from_file(write(tmp_path, '{"objective": "t1",\n}', "s.json"))


def test_runtime_input_errors_happen_before_anything_runs(tmp_path: Path) -> None:
    ts = schema("touch ran; echo <<parameter:p1.a>>")
    with pytest.raises(SchemaError) as e:
        ts.run({}, tmp_path)
    assert str(e.value) == ("task schema 't1': missing required input 'p1'; pass it: --input p1=... on the command "
                            "line, inputs={'p1': ...} in Python")
    with pytest.raises(SchemaError) as e:
        ts.run({"p1": {"a": 1}, "p11": 2}, tmp_path)
    assert str(e.value) == "task schema 't1': unknown input 'p11'; did you mean 'p1'? (inputs: p1)"
    with pytest.raises(SchemaError) as e:
        ts.run({"p1": 1, "zzz": 2}, tmp_path)
    assert str(e.value) == "task schema 't1': unknown input 'zzz'; inputs: p1"  # the names once
    with pytest.raises(SchemaError) as e:
        ts.run({"p1": {"b": 1}}, tmp_path)
    assert str(e.value) == ("task schema 't1', actions[0].commands[0].command: <<parameter:p1.a>>: 'p1' has no "
                            "key 'a' (keys: b); fix the input value")
    assert not (tmp_path / "ran").exists()


# -- task values: plain, or read from the environment ----------------------------------------------------
HOSTILE = [
    "$(touch PWNED)",
    "`touch PWNED`",
    "a[$(touch PWNED)]",
    "x[`touch PWNED`]",
    ";touch PWNED",
    "; rm -f FILE",
    "--output=FILE",
    "-o FILE",
    "-rf",
    "-inf",
    "-5,3",
    "it's",
    'say "hi"',
    "a\0b",
    "a\ntouch PWNED",
    "a b",
    "*",
    "~",
    "~/x",
    "{a,b}",
    "$HOME",
    "${HOME}",
    "x]",
    "\\",
    "a|touch PWNED",
    "a&&touch PWNED",
    "> FILE",
    "",
    "EOF\ntouch PWNED\nEOF",
]

HOSTILE_TEMPLATES = [
    "echo $(echo $(echo $((<<parameter:p1>> + 1))))",
    "echo \"$(echo \"$(( <<parameter:p1>> ))\")\"",
    "declare -i x=<<parameter:p1>>; echo $x",
    "f() { local -i x; x=<<parameter:p1>>; echo $x; }; f",
    "(( <<parameter:p1>> > 0 )) && echo yes",
    "[[ <<parameter:p1>> -eq 1 ]] && echo yes",
    "let x=<<parameter:p1>>",
    "a=(1 2); echo ${a[<<parameter:p1>>]}",
    "x=abc; echo ${x:<<parameter:p1>>}",
    "x=$(cat <<EOF\n<<parameter:p1>>\nEOF\n); echo \"$x\"",
    "cat <<EOF\n<<parameter:p1>>\nEOF",
    "echo \"${V:-<<parameter:p1>>}\"",
    "echo \"${V:-\"<<parameter:p1>>\"}\"",
    "echo \\<<parameter:p1>>",
    "trap '<<parameter:p1>>' EXIT",
    "sort <<parameter:p1>> < /dev/null",
    "echo '<<parameter:p1>>'",
    "echo \"<<parameter:p1>>\"",
    "echo $'<<parameter:p1>>'",
    "echo `echo <<parameter:p1>>`",
    "eval echo <<parameter:p1>>",
    "true # <<parameter:p1>>\necho done",
    "printf '%s|' <<args>>",
    "printf '%s|' <<v>>",
    "echo <<join[delim=\",\"](parameter:p1)>>",
    "echo <<join(parameter:p1)>>",
    "echo <<parameter:p1>>",
]


def hostile_schema(template: str) -> TaskSchema:
    """An earlier command with a side effect, then the template: a refusal must come before both."""
    cmd: Dict[str, Any] = {"command": template}
    if "<<args>>" in template:
        cmd["args"] = ["--x", "<<parameter:p1>>"]
    if "<<v>>" in template:
        cmd["variables"] = {"v": "pre-<<parameter:p1>>"}
    return TaskSchema.from_dict({"objective": "hostile", "inputs": ["p1"], "actions": [
        {"commands": [{"command": "touch EARLIER"}]}, {"commands": [cmd]}]})


def test_hostile_values_are_refused_before_anything_runs(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "FILE").write_text("precious\n")
    refused = 0
    for template in HOSTILE_TEMPLATES:
        ts = hostile_schema(template)
        as_list = "join" in template
        try:  # a plain value runs: the harness would see damage
            ts.run({"p1": [1] if as_list else 1}, work)
        except TaskFailed:
            pass  # e.g. `sort 1`: no such file
        assert (work / "EARLIER").exists(), template
        (work / "EARLIER").unlink()
        for value in HOSTILE:
            with pytest.raises(SchemaError) as e:
                ts.run({"p1": ["x", value] if as_list else value}, work)
            message = str(e.value)
            assert "\n" not in message and "parameter 'p1'" in message and '"$EXPRAG_PARAM_p1"' in message, message
            assert "not plain" in message, message
            refused += 1
            assert sorted(p.name for p in work.iterdir()) == ["FILE"], (template, value)
    assert (work / "FILE").read_text() == "precious\n"
    assert refused == len(HOSTILE) * len(HOSTILE_TEMPLATES)


def test_refusal_names_the_first_offending_character_and_its_position() -> None:
    ts = schema("echo <<parameter:p1>>")
    for value, words in [("ab$(x)", "'$' at position 3 in 'ab$(x)'"),
                         ("--output=FILE", "'-' at position 1 (a leading '-' only in a number) in '--output=FILE'"),
                         ("a\0b", "'\\x00' at position 2"), ("a\nb", "'\\n' at position 2"),
                         ("", "it is empty;"), ({"k": 1}, "'{' at position 1")]:
        with pytest.raises(SchemaError) as e:
            ts.resolve_commands({"p1": value})
        assert str(e.value).startswith("task schema 't1', actions[0].commands[0].command: <<parameter:p1>>: the "
                                       "value of parameter 'p1' is not plain: ")
        assert words in str(e.value)
        assert str(e.value).endswith('read any other text from the environment variable "$EXPRAG_PARAM_p1" in the '
                                     'command instead of <<parameter:p1>>')
    with pytest.raises(SchemaError, match=r"parameter 'p1' \(item 1\) is not plain: ' ' at position 2"):
        ts.resolve_commands({"p1": ["ok", "a b"]})
    with pytest.raises(SchemaError, match=r"is not plain: '-' at position 1 .* in '-5,3'"):
        schema('echo <<join[delim=","](parameter:p1)>>').resolve_commands({"p1": [-5, 3]})


ENV_READS = [
    ("printf '%s' \"$EXPRAG_PARAM_p1\" > got", ""),
    ("printf '%s' \"${EXPRAG_PARAM_p1}\" > got", ""),
    ("printf '%s' \"${V:-$EXPRAG_PARAM_p1}\" > got", ""),
    ("x=\"$EXPRAG_PARAM_p1\"; printf '%s' \"$(printf '%s' \"$(printf '%s' \"$x\")\")\" > got", ""),
    ("cat > got <<EOF\n$EXPRAG_PARAM_p1\nEOF", "\n"),
    ("<<executable:python>> -c 'import os; open(\"got\", \"wb\").write(os.environb[b\"EXPRAG_PARAM_p1\"])'", ""),
]


@pytest.mark.parametrize("command, tail", ENV_READS, ids=[f"r{i}" for i in range(len(ENV_READS))])
def test_any_text_reaches_the_command_byte_identical_through_the_environment(tmp_path: Path, command: str,
                                                                             tail: str) -> None:
    ts = TaskSchema.from_dict({"objective": "env", "inputs": ["p1"], "actions": [
        {"environments": {"any": "python_env"}, "commands": [{"command": command}]}]})
    work = tmp_path / "w"
    work.mkdir()
    (work / "FILE").write_text("precious\n")
    for value in HOSTILE + ["é ünïcödé", "x" * 100_000]:
        if "\0" in value:
            with pytest.raises(SchemaError, match=r"reads \$EXPRAG_PARAM_p1, but parameter 'p1' cannot be put in "
                                                  r"the environment: it holds a NUL character"):
                ts.run({"p1": value}, work)
            continue
        if "$(" in command and value.endswith("\n"):
            continue  # $(...) drops trailing newlines: bash's rule, not a change of the value
        ts.run({"p1": value}, work)
        assert (work / "got").read_bytes() == (value + tail).encode(), value
        (work / "got").unlink()
        assert sorted(p.name for p in work.iterdir()) == ["FILE"] and (work / "FILE").read_text() == "precious\n"


def test_the_environment_holds_every_parameter_as_text_or_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.setenv("EXPRAG_PARAM_stale", "from an outer task")
    ts = TaskSchema.from_dict({"objective": "env", "inputs": ["s", "n", "f", "b", "z", "d"], "outputs": ["o"],
                               "actions": [{"commands": [
                                   {"command": "echo 7", "stdout": "<<parameter:o>>"},
                                   {"command": "env | grep '^EXPRAG''_PARAM_' | sort > got; : $EXPRAG_PARAM_s "
                                               "$EXPRAG_PARAM_n $EXPRAG_PARAM_f $EXPRAG_PARAM_b $EXPRAG_PARAM_z "
                                               "$EXPRAG_PARAM_d $EXPRAG_PARAM_o"}]}]})
    ts.run({"s": "a b", "n": 3, "f": -1.5, "b": True, "z": None, "d": {"k": [1, "x"]}}, tmp_path)
    assert (tmp_path / "got").read_text().splitlines() == [
        'EXPRAG_PARAM_b=true', 'EXPRAG_PARAM_d={"k": [1, "x"]}', "EXPRAG_PARAM_f=-1.5", "EXPRAG_PARAM_n=3",
        "EXPRAG_PARAM_o=7", "EXPRAG_PARAM_s=a b", "EXPRAG_PARAM_z=null"]


def test_an_input_read_only_from_the_environment_is_consumed() -> None:
    for ref in ("$EXPRAG_PARAM_label", "${EXPRAG_PARAM_label}", "${EXPRAG_PARAM_label:-none}"):
        ts = TaskSchema.from_dict({"objective": "t", "inputs": ["label"], "actions": [
            {"commands": [{"command": f"echo \"{ref}\""}]}]})
        assert ts.info_dict()["actions"][0]["inputs"] == ["label"]
    with pytest.raises(SchemaError, match=r"actions\[0\]\.commands\[0\]\.command: parameter 'p2' has no source.*"
                                          r"produced only later, by actions\[1\]"):
        TaskSchema.from_dict({"objective": "t", "inputs": ["p1"], "outputs": ["p2"], "actions": [
            {"commands": [{"command": "echo \"$EXPRAG_PARAM_p2\" <<parameter:p1>>"}]},
            {"commands": [{"command": "echo 1", "stdout": "<<parameter:p2>>"}]}]})


def test_plain_values_substitute_and_run(tmp_path: Path) -> None:
    ts = schema("printf '[%s]' <<parameter:p1>>", stdout="<<str(parameter:p2)>>")
    for value, shown in [(21, "[21]"), (-3, "[-3]"), (-1.5e-07, "[-1.5e-07]"), (2.5, "[2.5]"), ("-7", "[-7]"),
                         ("/tmp/a_b/c.txt", "[/tmp/a_b/c.txt]"), ("./data/x-1.csv", "[./data/x-1.csv]"),
                         ("lr=0.1", "[lr=0.1]"), ("a,b", "[a,b]"), ("user@host:8080/%7E+x", "[user@host:8080/%7E+x]"),
                         (True, "[true]"), ([1, "b", -2], "[1][b][-2]"), ("1e+20", "[1e+20]")]:
        assert ts.run({"p1": value}, tmp_path).outputs == {"p2": shown}, value
    arith = schema("echo $((<<parameter:p1>> * 2)) <<parameter:p1>>", stdout="<<str(parameter:p2)>>")
    assert arith.resolve_commands({"p1": 21}) == ["echo $((21 * 2)) 21"]
    assert arith.run({"p1": -21}, tmp_path).outputs == {"p2": "-42 -21"}


def test_a_captured_value_that_is_not_plain_stops_the_task_before_the_next_command(tmp_path: Path) -> None:
    ts = TaskSchema.from_dict({"objective": "cap", "inputs": ["p1"], "outputs": ["p3"], "actions": [
        {"commands": [{"command": "printf '%s' '$(touch PWNED)' <<parameter:p1>>", "stdout": "<<str(parameter:p2)>>"}]},
        {"commands": [{"command": "touch LATER; echo <<parameter:p2>>", "stdout": "<<str(parameter:p3)>>"}]}]})
    assert ts.resolve_commands({"p1": 1})[1] == "touch LATER; echo <<parameter:p2>>"
    tmp_path = tmp_path / "w"
    with pytest.raises(TaskFailed) as e:
        ts.run({"p1": 1}, tmp_path)
    assert str(e.value).startswith("task schema 'cap', actions[1].commands[0]: not started, as a value an earlier "
                                   "command printed is refused (the commands before it have run): "
                                   "<<parameter:p2>>: the value of parameter 'p2' is not plain: '$' at position 1")
    assert '"$EXPRAG_PARAM_p2"' in str(e.value) and "\n" not in str(e.value)
    assert len(e.value.result.commands) == 1 and e.value.result.status == "failed"
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    via_env = TaskSchema.from_dict({**ts.to_dict(), "actions": [ts.to_dict()["actions"][0], {"commands": [
        {"command": "printf '%s' \"$EXPRAG_PARAM_p2\"", "stdout": "<<str(parameter:p3)>>"}]}]})
    assert via_env.run({"p1": 1}, tmp_path).outputs == {"p3": "$(touch PWNED)1"}
    assert not (tmp_path / "PWNED").exists()


def test_a_value_naming_a_variable_that_holds_code_is_refused(tmp_path: Path) -> None:
    """Shell arithmetic evaluates a named variable's text: `x='a[$(cmd)]'; $((x))` runs cmd."""
    tmp_path = tmp_path / "w"
    tmp_path.mkdir()
    evil = {"p2": "a[$(touch PWNED)]"}
    for template, p1 in [("echo \"$EXPRAG_PARAM_p2\" > /dev/null; echo $((<<parameter:p1>> + 1))", "EXPRAG_PARAM_p2"),
                         ("echo \"$EXPRAG_PARAM_p2\" > /dev/null; declare -i x=<<parameter:p1>>", "EXPRAG_PARAM_p2"),
                         ("echo \"$EXPRAG_PARAM_p2\" > /dev/null; echo $((EXPRAG_PARAM_<<parameter:p1>>))", "p2"),
                         ("echo \"$EXPRAG_PARAM_p2\" > /dev/null; echo $((<<parameter:p1>>p2))", "EXPRAG_PARAM_")]:
        ts = TaskSchema.from_dict({"objective": "t", "inputs": ["p1", "p2"], "actions": [
            {"commands": [{"command": "touch EARLIER"}, {"command": template}]}]})
        with pytest.raises(SchemaError, match=r"the value of parameter 'p1' makes the word 'EXPRAG_PARAM_p2', the "
                                              r"name of a variable that may hold text that is not plain"):
            ts.run({"p1": p1, **evil}, tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == []
        ts.run({"p1": p1, "p2": 5}, tmp_path)  # a plain variable is harmless there
        assert (tmp_path / "EARLIER").exists()
        (tmp_path / "EARLIER").unlink()
    # `_` is the last argument of the previous command: here the hostile text of p2
    ts = TaskSchema.from_dict({"objective": "t", "inputs": ["p1", "p2"], "actions": [{"commands": [
        {"command": "echo \"$EXPRAG_PARAM_p2\" > /dev/null; echo $((<<parameter:p1>> + 1))"}]}]})
    for p1, word in [("_", "_"), ("1+_", "_"), ("REPLY", "REPLY")]:
        with pytest.raises(SchemaError, match=f"makes the word '{word}'"):
            ts.run({"p1": p1, **evil}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_value_too_long_for_the_environment_is_left_out_unless_read(tmp_path: Path) -> None:
    ts = TaskSchema.from_dict({"objective": "big", "inputs": ["p1"], "outputs": ["p2", "p3"], "actions": [
        {"commands": [{"command": "head -c 200000 /dev/zero | tr '\\0' <<parameter:p1>>",
                       "stdout": "<<str(parameter:p2)>>"},
                      {"command": "echo <<parameter:p1>>", "stdout": "<<parameter:p3>>"}]}]})
    assert ts.run({"p1": "x"}, tmp_path).outputs == {"p2": "x" * 200_000, "p3": "x"}
    reads = TaskSchema.from_dict({**ts.to_dict(), "actions": [{"commands": [
        ts.to_dict()["actions"][0]["commands"][0], {"command": "echo ${#EXPRAG_PARAM_p2}", "stdout": "<<parameter:p3>>"}]}]})
    with pytest.raises(TaskFailed, match=r"commands\[1\]: not started.*reads \$EXPRAG_PARAM_p2, but parameter 'p2' "
                                         r"cannot be put in the environment: it is 200000 bytes long"):
        reads.run({"p1": "x"}, tmp_path)


# -- resolution ------------------------------------------------------------------------------------------
def test_value_forms(tmp_path: Path) -> None:
    ts = schema("echo <<parameter:p1.a>> <<parameter:p1.l.1>> <<parameter:p1.l>> <<sum(parameter:p1.l)>> "
                "<<join(parameter:p1.l)>> <<join[delim=\",\"](parameter:p1.l)>> <<join[delim=\"\"](parameter:p1.l)>> "
                "<<parameter:p1.t>> <<parameter:p1.l.-1>> \"$EXPRAG_PARAM_p1\"", stdout="<<str(parameter:p2)>>")
    value = {"a": "x_y", "l": [1, 2, 3.5], "t": True, "n": None}
    assert ts.resolve_commands({"p1": value}) == [
        "echo x_y 2 1 2 3.5 6.5 1 2 3.5 1,2,3.5 123.5 true 3.5 \"$EXPRAG_PARAM_p1\""]
    assert ts.run({"p1": value}, tmp_path).outputs["p2"] == (
        'x_y 2 1 2 3.5 6.5 1 2 3.5 1,2,3.5 123.5 true 3.5 {"a": "x_y", "l": [1, 2, 3.5], "t": true, "n": null}')
    for part, words in [("p1", "'{' at position 1"), ("p1.n", "it is empty")]:
        with pytest.raises(SchemaError, match=f"value of parameter 'p1' is not plain: {words}"):
            schema(f"echo <<parameter:{part}>>").resolve_commands({"p1": value})


def test_args_and_variables(tmp_path: Path) -> None:
    ts = schema("printf '[%s]' <<args>>", args=["a b", 3, True, "<<parameter:p1>>-x"],
                stdout="<<str(parameter:p2)>>")
    assert ts.resolve_commands({"p1": 7}) == ["printf '[%s]' 'a b' 3 true 7-x"]
    assert ts.run({"p1": 7}, tmp_path).outputs == {"p2": "[a b][3][true][7-x]"}
    no_args = schema("echo <<parameter:p1>> <<args>>end")
    assert no_args.resolve_commands({"p1": 1}) == ["echo 1 end"]  # no args: <<args>> is empty, not left in
    with_vars = schema("echo <<greeting>> <<parameter:p1>>", variables={"greeting": "hello world"})
    assert with_vars.resolve_commands({"p1": 1}) == ["echo 'hello world' 1"]
    with pytest.raises(SchemaError, match=r"args\[0\]: <<args>> cannot be used here"):
        schema("echo <<args>> <<parameter:p1>>", args=["<<args>>"])


def test_executables_from_custom_environments(tmp_path: Path) -> None:
    shout = Environment("shout_env", {"shout": "tr a-z A-Z <<<"})
    ts = TaskSchema.from_dict({"objective": "t", "inputs": ["p1"], "outputs": ["p2"], "actions": [{
        "environments": {"any": "shout_env"},
        "commands": [{"command": "<<executable:shout>> <<parameter:p1>>", "stdout": "<<parameter:p2>>"}]}]},
        environments=[shout])
    assert ts.run({"p1": "quiet"}, tmp_path).outputs == {"p2": "QUIET"}


def test_dry_run_leaves_later_values_visible() -> None:
    ts = TaskSchema.from_file(EXAMPLES / "seed_intermediate_p2.yaml")
    assert ts.resolve_commands({"p1": 5}) == ["echo $((5 + 1))", "echo $((<<parameter:p2>> + 1))"]


# -- outputs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("printed, mapping, expected", [
    ("42", "<<parameter:p2>>", 42),
    ("  -3.5e2 \n", "<<parameter:p2>>", -350.0),
    ('{"a": [1, 2]}', "<<parameter:p2>>", {"a": [1, 2]}),
    ("true", "<<parameter:p2>>", True),
    ("hello world\n", "<<parameter:p2>>", "hello world"),
    ("", "<<str(parameter:p2)>>", ""),
    ("7\n", "<<int(parameter:p2)>>", 7),
    ("7\n", "<<float(parameter:p2)>>", 7.0),
    ("42", "<<str(parameter:p2)>>", "42"),
    ("  two lines\nhere  \n", "<<str(parameter:p2)>>", "  two lines\nhere  "),
    ("[1, 2]", "<<json(parameter:p2)>>", [1, 2]),
    ("1.5:2:3e1\n", '<<list[item_type=float, delim=":"](parameter:p2)>>', [1.5, 2.0, 30.0]),
    ("1 2  3\n", "<<list[item_type=int](parameter:p2)>>", [1, 2, 3]),
    ("a,b", "<<list[delim=\",\"](parameter:p2)>>", ["a", "b"]),
    ("", "<<list(parameter:p2)>>", []),
])
def test_typed_outputs(tmp_path: Path, printed: str, mapping: str, expected: Any) -> None:
    ts = schema("printf '%s' \"$EXPRAG_PARAM_p1\"", stdout=mapping)
    value = ts.run({"p1": printed}, tmp_path).outputs["p2"]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("printed, mapping, words", [
    ("abc", "<<int(parameter:p2)>>", "parameter 'p2' expected an integer from stdout, got 'abc'"),
    ("1.5", "<<int(parameter:p2)>>", "parameter 'p2' expected an integer from stdout, got '1.5'"),
    ("x1", "<<float(parameter:p2)>>", "parameter 'p2' expected a number from stdout, got 'x1'"),
    ("{bad", "<<json(parameter:p2)>>", "parameter 'p2' expected JSON from stdout, got '{bad'"),
    ("1:x", '<<list[item_type=float, delim=":"](parameter:p2)>>',
     "parameter 'p2' expected a number for item 1 from stdout, got 'x'"),
    (" \n", "<<parameter:p2>>", "parameter 'p2' expected a value from stdout, but the command printed nothing there"),
])
def test_typed_output_that_does_not_parse_fails_the_task(tmp_path: Path, printed: str, mapping: str,
                                                         words: str) -> None:
    ts = schema("printf '%s' \"$EXPRAG_PARAM_p1\"", stdout=mapping)
    with pytest.raises(TaskFailed) as e:
        ts.run({"p1": printed}, tmp_path)
    assert str(e.value) == f"task schema 't1', actions[0].commands[0]: {words}"
    assert e.value.result.status == "failed" and e.value.result.error == str(e.value)
    assert e.value.result.commands[0]["stdout"] == printed


def test_a_failing_stage_of_a_pipe_fails_the_task_and_commands_can_find_the_project(tmp_path: Path,
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Trial 7's `python train.py ... | tail -n 1 | cut -d= -f2`, run in the element's folder where train.py is
    not: python failed, cut exited 0, and the task recorded val_loss "" as a success. A pipe now fails as its
    failing stage (bash's pipefail), its stderr in the error, and $EXPRAG_PROJECT_DIR names the folder
    `task run` ran in."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "train.py").write_text("print('val_loss=0.25')\n")
    monkeypatch.chdir(project)
    ts = schema("python3 train.py --seed <<parameter:p1>> | tail -n 1 | cut -d= -f2")
    with pytest.raises(TaskFailed) as e:
        ts.run({"p1": 1}, tmp_path / "el0")
    assert "exit code 2 from 'python3 train.py --seed 1 | tail -n 1 | cut -d= -f2'; stderr ends with: python3: can't open" \
        in str(e.value)
    assert str(e.value).endswith(f"No such file or directory (commands run in the element's folder {tmp_path / 'el0'}; "
                                 "$EXPRAG_PROJECT_DIR names the folder `task run` ran in)")
    ts = schema('python3 "$EXPRAG_PROJECT_DIR/train.py" --seed <<parameter:p1>> | tail -n 1 | cut -d= -f2')
    assert ts.run({"p1": 1}, tmp_path / "el1").outputs["p2"] == 0.25


def test_stderr_mapping_and_record(tmp_path: Path) -> None:
    ts = TaskSchema.from_dict({"objective": "t", "inputs": ["p1"], "outputs": ["o", "e"], "actions": [{
        "commands": [{"command": "echo <<parameter:p1>>; echo 2.5 >&2", "stdout": "<<parameter:o>>",
                      "stderr": "<<parameter:e>>"}]}]})
    record = ts.run({"p1": 1}, tmp_path).to_record()
    assert record["outputs"] == {"o": 1, "e": 2.5}
    assert set(record) == {"objective", "inputs", "outputs", "commands", "status", "error"}
    assert set(record["commands"][0]) == {"command", "exit_code", "stdout", "stderr", "duration_ms"}
    assert record["commands"][0]["stderr"] == "2.5\n" and record["commands"][0]["exit_code"] == 0
    json.dumps(record, allow_nan=False)


# -- execution -------------------------------------------------------------------------------------------
def test_nonzero_exit_fails_with_command_code_and_stderr(tmp_path: Path) -> None:
    ts = TaskSchema.from_file(EXAMPLES / "seed_intermediate_p2.yaml")
    bad = TaskSchema.from_dict({**ts.to_dict(), "actions": [ts.to_dict()["actions"][0], {"commands": [
        {"command": "echo boom >&2; exit 3; echo <<parameter:p2>>", "stdout": "<<parameter:p3>>"}]}]})
    with pytest.raises(TaskFailed) as e:
        bad.run({"p1": 1}, tmp_path)
    assert str(e.value) == ("task schema 't1', actions[1].commands[0]: exit code 3 from 'echo boom >&2; exit 3; "
                            "echo 2'; stderr ends with: boom")
    result = e.value.result
    assert isinstance(result, TaskResult) and result.status == "failed"
    assert [c["exit_code"] for c in result.commands] == [0, 3]
    assert result.outputs == {}  # p3 never produced


def test_timeout_kills_the_process_group_fast(tmp_path: Path) -> None:
    ts = schema("(sleep 1; touch LATE) & sleep 30; echo <<parameter:p1>>")
    start = time.monotonic()
    with pytest.raises(TaskFailed) as e:
        ts.run({"p1": 1}, tmp_path, timeout=0.5)
    assert time.monotonic() - start < 5
    assert "timed out after 0.5 s (task timeout 0.5 s) and its process group was killed" in str(e.value)
    assert e.value.result.commands[0]["exit_code"] != 0
    time.sleep(1.3)
    assert not (tmp_path / "LATE").exists()  # the background child died with the group


def test_timeout_is_a_budget_for_the_whole_task(tmp_path: Path) -> None:
    ts = TaskSchema.from_dict({"objective": "t", "inputs": ["p1"], "outputs": ["p3"], "actions": [
        {"commands": [{"command": "sleep 0.4; echo <<parameter:p1>>", "stdout": "<<parameter:p2>>"}]},
        {"commands": [{"command": "sleep 0.4; echo <<parameter:p2>>", "stdout": "<<parameter:p3>>"}]}]})
    with pytest.raises(TaskFailed, match=r"actions\[1\]\.commands\[0\]: timed out"):
        ts.run({"p1": 1}, tmp_path, timeout=0.6)
    assert ts.run({"p1": 1}, tmp_path, timeout=None).outputs == {"p3": 1}


def test_large_outputs_do_not_hang_and_are_truncated_in_the_record(tmp_path: Path) -> None:
    ts = schema("head -c 1000000 /dev/zero | tr '\\0' e >&2; head -c 10000000 /dev/zero | tr '\\0' <<parameter:p1>>",
                stdout="<<str(parameter:p2)>>")
    start = time.monotonic()
    result = ts.run({"p1": "x"}, tmp_path, timeout=60)
    assert time.monotonic() - start < 10
    assert len(result.outputs["p2"]) == 10_000_000  # parsed whole
    record = result.commands[0]
    assert record["stdout"].startswith("[... 9996000 earlier characters cut ...]\n")
    assert record["stdout"].endswith("x" * 4000) and len(record["stdout"]) < 4100
    assert record["stderr"].startswith("[... 996000 earlier characters cut ...]\n")


def test_workdir_is_created_and_used_stdin_is_closed(tmp_path: Path) -> None:
    ts = schema("cat; pwd; echo <<parameter:p1>> > made.txt", stdout="<<str(parameter:p2)>>")
    work = tmp_path / "a" / "b"
    out = ts.run({"p1": "v"}, work, timeout=10).outputs["p2"]
    assert Path(out).resolve() == work.resolve()
    assert (work / "made.txt").read_text() == "v\n"


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs /bin/sh")
def test_posix_sh_is_used_when_bash_is_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to("/bin/sh")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert shutil.which("bash") is None
    ts = schema("printf '%s' \"${BASH_VERSION:-no bash}\" \"$EXPRAG_PARAM_p1\"", stdout="<<str(parameter:p2)>>")
    assert ts.run({"p1": ""}, tmp_path / "w").outputs == {"p2": "no bash"}


# -- information -----------------------------------------------------------------------------------------
def test_info_text_and_dict() -> None:
    ts = TaskSchema.from_file(EXAMPLES / "sweep_stats.yaml")
    text = ts.info
    assert text.splitlines()[0] == "Task schema: sweep_stats"
    assert "  values  default: [1.5, 2.5, 4]" in text
    assert "  scale   required" in text
    assert "[0] environments: any: python_env" in text
    assert f"executable python: {python_env.executables['python']}" in text
    assert "consumes: scale, values; produces: total" in text
    assert "stdout -> <<float(parameter:total)>>" in text
    assert "inputs.scale (nesting_order 0): [1, 10]" in text
    d = ts.info_dict()
    json.dumps(d, allow_nan=False)
    assert d["inputs"][2] == {"parameter": "scale", "required": True}
    assert d["actions"][1]["inputs"] == ["label", "total"] and d["actions"][1]["outputs"] == ["summary"]


def test_example_schema_runs_over_its_sequence(tmp_path: Path) -> None:
    ts = TaskSchema.from_file(EXAMPLES / "sweep_stats.yaml")
    sets = ts.input_sets()
    assert sets == [{"scale": 1}, {"scale": 10}]
    totals = [ts.run(s, tmp_path / str(i)).outputs for i, s in enumerate(sets)]
    assert totals[1] == {"total": 80.0, "summary": {"label": "run #1; not a command", "total": 80.0}}


# -- sequences -------------------------------------------------------------------------------------------
def test_sequences_zip_within_an_order_and_multiply_across_orders() -> None:
    got = expand_sequences({"c": 0}, [
        {"path": "inputs.a", "values": [1, 2], "nesting_order": 0},
        {"path": "b", "values": ["x", "y"], "nesting_order": 0},
        {"path": "inputs.d", "values": [True, False], "nesting_order": 1},
    ])
    assert got == [{"c": 0, "a": 1, "b": "x", "d": True}, {"c": 0, "a": 1, "b": "x", "d": False},
                   {"c": 0, "a": 2, "b": "y", "d": True}, {"c": 0, "a": 2, "b": "y", "d": False}]
    assert expand_sequences({"a": 1}, []) == [{"a": 1}]
    assert expand_sequences({"p": {"k": 0, "j": 1}}, [{"path": "inputs.p.k", "values": [5, 6]}]) == [
        {"p": {"k": 5, "j": 1}}, {"p": {"k": 6, "j": 1}}]


@pytest.mark.parametrize("inputs, sequences, words", [
    ({}, [{"path": "a", "values": [1, 2]}, {"path": "b", "values": [1]}],
     "sequences with nesting_order 0 must have equal lengths (inputs.a has 2, inputs.b has 1)"),
    ({"a": 1}, [{"path": "a", "values": [1]}], "'a' is given both as an input and as a sequence"),
    ({}, [{"path": "a", "values": []}], "values must be a non-empty list"),
    ({}, [{"path": "a", "value": [1]}], "unknown key 'value' in a sequence; did you mean 'values'?"),
    ({}, [{"path": "resources.x", "values": [1]}], "sequences[0].path: path 'resources.x' does not name an input"),
    ({}, [{"path": "a", "values": [1]}, {"path": "inputs.a", "values": [2]}], "has two sequences"),
])
def test_sequence_errors(inputs: Dict[str, Any], sequences: Any, words: str) -> None:
    with pytest.raises(SchemaError) as e:
        expand_sequences(inputs, sequences)
    assert words in str(e.value)


def test_parse_value_for_cli_inputs() -> None:
    assert parse_value("3") == 3 and parse_value("3.0") == 3.0 and parse_value("[1]") == [1]
    assert parse_value(" text ") == "text" and parse_value("null") is None
