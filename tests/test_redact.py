"""Credentials never reach a run file: argv shapes, metadata, task inputs, commands and their output."""

from __future__ import annotations

import json
import sys
import re
from pathlib import Path
from typing import List, Tuple

import pytest

from exprag_plus import Experiment, records
from exprag_plus.redact import REDACTED, is_secret_name, redact_argv, redact_mapping, redact_text

from conftest import cli, read_lines, run_python

S = "Zq9S3cr3tVal"  # the secret in every shape below
P = ["python", "train.py"]

LEAKS: List[Tuple[str, List[str]]] = [
    # secret-named options, every spelling
    ("--token X", P + ["--token", S]),
    ("--token=X", P + [f"--token={S}"]),
    ("--token -X", P + ["--token", "-" + S]),
    ("--password X", P + ["--password", S]),
    ("--password=X", P + [f"--password={S}"]),
    ("--passwd X", P + ["--passwd", S]),
    ("--pass X", P + ["--pass", S]),
    ("--pwd X", P + ["--pwd", S]),
    ("--passphrase X", P + ["--passphrase", S]),
    ("--secret X", P + ["--secret", S]),
    ("--client-secret X", P + ["--client-secret", S]),
    ("--api-key X", P + ["--api-key", S]),
    ("--api_key=X", P + [f"--api_key={S}"]),
    ("--apikey X", P + ["--apikey", S]),
    ("--apiKey X", P + ["--apiKey", S]),
    ("--key X", P + ["--key", S]),
    ("--wandb-key X", P + ["--wandb-key", S]),
    ("--wandb_api_key X", P + ["--wandb_api_key", S]),
    ("--access-key X", P + ["--access-key", S]),
    ("--private-key X", P + ["--private-key", S]),
    ("--auth X", P + ["--auth", f"user:{S}"]),
    ("--auth-token X", P + ["--auth-token", S]),
    ("--hf-token X", P + ["--hf-token", S]),
    ("--credentials X", P + ["--credentials", S]),
    ("--creds X", P + ["--creds", S]),
    ("--cookie X", P + ["--cookie", f"session={S}"]),
    ("--session-token X", P + ["--session-token", S]),
    # environment-style assignments
    ("TOKEN=X", P + [f"TOKEN={S}"]),
    ("PGPASSWORD=X", ["env", f"PGPASSWORD={S}", "psql", "-h", "db"]),
    ("MYSQL_PWD=X", ["env", f"MYSQL_PWD={S}", "mysql"]),
    ("AWS_SECRET_ACCESS_KEY=X", P + [f"AWS_SECRET_ACCESS_KEY={S}"]),
    ("WANDB_API_KEY=X", P + [f"WANDB_API_KEY={S}"]),
    ("OPENAI_API_KEY=X", P + [f"OPENAI_API_KEY={S}"]),
    # password flags of known clients
    ("mysql -p X", ["mysql", "-u", "root", "-p", S, "db"]),
    ("mysql -pX", ["mysql", "-uroot", f"-p{S}", "db"]),
    ("mysqldump -pX", ["/usr/bin/mysqldump", f"-p{S}", "db"]),
    ("sshpass -p X", ["sshpass", "-p", S, "ssh", "host"]),
    ("redis-cli -a X", ["redis-cli", "-a", S, "ping"]),
    ("mongosh -p X", ["mongosh", "-u", "admin", "-p", S]),
    ("curl -u user:X", ["curl", "-u", f"user:{S}", "https://api.example.com"]),
    ("curl -uuser:X", ["curl", f"-uuser:{S}", "https://api.example.com"]),
    ("curl --user user:X", ["curl", "--user", f"user:{S}", "https://api.example.com"]),
    ("curl -u TOKEN:", ["curl", "-u", f"{S}:", "https://api.example.com"]),
    ("docker login -p X", ["docker", "login", "-u", "me", "-p", S, "registry.example.com"]),
    ("smbclient -U user%X", ["smbclient", "//srv/share", "-U", f"user%{S}"]),
    ("zip -P X", ["zip", "-P", S, "out.zip", "a.txt"]),
    ("openssl -passin pass:X", ["openssl", "rsa", "-in", "k.pem", "-passin", f"pass:{S}"]),
    # headers
    ("Authorization: Bearer X", ["curl", "-H", f"Authorization: Bearer {S}", "https://x"]),
    ("Authorization: Basic X", ["curl", "-H", f"Authorization: Basic {S}", "https://x"]),
    ("X-API-Key: X", ["curl", "-H", f"X-API-Key: {S}", "https://x"]),
    ("X-Auth-Token: X", ["curl", "-H", f"X-Auth-Token: {S}", "https://x"]),
    ("Cookie: X", ["curl", "-H", f"Cookie: sid={S}; theme=dark", "https://x"]),
    ("Set-Cookie: X", P + ["--header", f"Set-Cookie: sid={S}; HttpOnly"]),
    ("--header=Authorization: X", P + [f"--header=Authorization: token {S}"]),
    ("HF_TOKEN:X", P + [f"HF_TOKEN:{S}"]),
    ("bearer in text", P + ["--note", f"use bearer {S} here"]),
    # URLs
    ("URL user:pass", P + ["--db", f"postgres://user:{S}@db.example.com/x"]),
    ("URL pass with @", P + ["--db", f"mysql://user:a@{S}@db.example.com/x"]),
    ("URL token user", P + ["--remote", f"https://{S}abcdefghijkl@github.com/o/r.git"]),
    ("URL ?token=", P + ["--url", f"https://h.example.com/x?token={S}&page=2"]),
    ("URL &access_token=", P + ["--url", f"https://h.example.com/x?a=1&access_token={S}"]),
    ("URL #access_token=", P + ["--url", f"https://h.example.com/cb#access_token={S}"]),
    ("URL sig=", P + ["--url", f"https://acct.blob.core.windows.net/c/f?sv=1&sig={S}"]),
    # JSON and dicts inside an argument
    ('JSON {"api_key": X}', P + ["--config", json.dumps({"api_key": S, "lr": 0.1})]),
    ('JSON nested password', P + ["--config", json.dumps({"db": {"password": S}})]),
    ("dict repr {'token': X}", P + ["--config", str({"token": S})]),
    ("YAML-ish secret: X", P + ["--extra", f"secret: {S}"]),
    ("k=v list", P + ["--opts", f"lr=0.1,password={S}"]),
    ("a shell command in one argument", ["bash", "-c", f"mysql -p{S} db < dump.sql"]),
    ("sshpass inside a command", ["sh", "-c", f"sshpass -p '{S}' ssh host"]),
    ("flag and value inside a command", ["sh", "-c", f"./deploy --token {S} --env prod"]),
]

SHAPES: List[Tuple[str, List[str], str]] = [
    ("OpenAI sk-", P + ["--k", "sk-proj-abcdefghijklmnopqrstuvwx"], "abcdefghijklmnop"),
    ("Anthropic sk-ant-", P + ["sk-ant-api03-abcdefghijklmnopqrstuvwx"], "abcdefghijklmnop"),
    ("Stripe sk_live_", P + ["--stripe", "sk_live_51Habcdefghijklmn"], "51Habcdefghijklmn"),
    ("Stripe sk_test_", P + ["sk_test_51Habcdefghijklmn"], "51Habcdefghijklmn"),
    ("Stripe rk_live_", P + ["rk_live_51Habcdefghijklmn"], "51Habcdefghijklmn"),
    ("Google AIza", P + ["--gkey", "AIzaSyA1234567890abcdefghijklmnopqrstu"], "SyA1234567890"),
    ("npm_", P + ["--registry-auth", "npm_abcdefghijklmnopqrstuvwxyz0123456789"], "abcdefghijklmnop"),
    ("GitHub ghp_", P + ["ghp_0123456789abcdefghij0123"], "0123456789abcdefghij"),
    ("GitHub github_pat_", P + ["github_pat_11ABCDEFG0123456789_abcdefghij"], "11ABCDEFG0123456789"),
    ("Slack xoxb-", P + ["--slack", "xoxb-123456789012-abcdefghijkl"], "123456789012-abcdefghijkl"),
    ("Slack webhook", P + ["--hook", "https://hooks.slack.com/services/T000/B000/abcdefghijkl"], "abcdefghijkl"),
    ("AWS AKIA", P + ["AKIAABCDEFGHIJKLMNOP"], "ABCDEFGHIJKLMNOP"),
    ("Hugging Face hf_", P + ["HF:hf_abcdefghijklmnopqrstuvwx"], "abcdefghijklmnopqrst"),
    ("GitLab glpat-", P + ["glpat-abcdefghijklmnopqrst"], "abcdefghijklmnopqrst"),
    ("JWT", P + ["--jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijklmnop"], "eyJzdWIiOiIxMjM0"),
    ("private key block", P + ["--pem", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAsecretbody\n"
                                        "-----END RSA PRIVATE KEY-----"], "MIIEowIBAAKCAQEAsecretbody"),
]

SAFE: List[List[str]] = [
    P + ["--lr", "0.1"], P + ["-p", "8080"], ["python", "serve.py", "-p", "8080", "--host", "0.0.0.0"],
    ["docker", "run", "-p", "8080:80", "img"], P + ["--keep"], P + ["--keyframes", "3"],
    P + ["--token-limit", "512"], P + ["--max-tokens", "512"], P + ["--max_new_tokens=256"],
    P + ["--tokenizer", "gpt2"], P + ["--author", "bob"], P + ["--pad-token-id", "0"], P + ["--pad_token", "[PAD]"],
    P + ["--sort-key", "name"], P + ["--text-key", "text"], P + ["--passes", "3"], P + ["--bypass-cache"],
    P + ["--num-keys", "4"], P + ["--key-file", "/etc/ssl/k.pem"], P + ["--password-file", "/run/secrets/db"],
    P + ["--no-auth", "data.csv"], P + ["--model", "/models/task-abcdefghijklmnopqrstuv/hf_cache"],
    P + ["--url", "https://example.com/a?page=2&q=token"], ["git", "clone", "ssh://git@github.com/o/r.git"],
    P + ["--output=out.json", "-n", "5", "--seed", "42"], P + ["--gpus", "0:1"], P + ["--config", '{"lr": 0.1}'],
    ["mysql", "-u", "root", "-h", "db.example.com", "shop"], ["curl", "-u", "alice", "https://x"],
    P + ["--tokens", "hello world"], P + ["--eval", "loss: 0.5"], P + ["--secret-name", "db-creds"],
]


def joined(argv: List[str]) -> str:
    return "\x00".join(redact_argv(argv))


@pytest.mark.parametrize("label,argv", LEAKS, ids=[c[0] for c in LEAKS])
def test_secret_argv_shapes_are_redacted(label: str, argv: List[str]) -> None:
    out = redact_argv(argv)
    assert S not in joined(argv) and any(REDACTED in a for a in out), out
    assert len(out) == len(argv)


@pytest.mark.parametrize("label,argv,part", SHAPES, ids=[c[0] for c in SHAPES])
def test_token_shapes_are_redacted(label: str, argv: List[str], part: str) -> None:
    assert part not in joined(argv) and REDACTED in joined(argv), redact_argv(argv)


def test_there_are_at_least_57_secret_shapes() -> None:
    assert len(LEAKS) + len(SHAPES) >= 57


@pytest.mark.parametrize("argv", SAFE, ids=[" ".join(a[2:] if a[:2] == P else a) for a in SAFE])
def test_harmless_arguments_are_kept(argv: List[str]) -> None:
    assert redact_argv(argv) == argv


def test_redaction_keeps_what_identifies_the_shape() -> None:
    assert redact_argv(["curl", "-u", f"user:{S}", "u"]) == ["curl", "-u", "user:***", "u"]
    assert redact_argv(["mysql", f"-p{S}"]) == ["mysql", "-p***"]
    assert redact_argv(["x", "--db", f"postgres://user:{S}@h/db"]) == ["x", "--db", "postgres://***@h/db"]
    assert redact_argv(["x", f"--password={S}"]) == ["x", "--password=***"]
    assert json.loads(redact_argv(["x", json.dumps({"api_key": S, "lr": 0.1})])[1]) == {"api_key": "***", "lr": 0.1}
    assert records.redact_argv is redact_argv and records.REDACTED == REDACTED  # old import path still works


@pytest.mark.parametrize("name", ["api_key", "X-API-Key", "PGPASSWORD", "wandbKey", "wandb_key", "hf_token",
                                  "client_secret", "password", "AWS_SECRET_ACCESS_KEY", "id_token", "cookie",
                                  "HFTOKEN", "my_hftoken_value", "password_budget"])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["max_tokens", "token_limit", "tokenizer", "pad_token_id", "eos_token",
                                  "author", "keyframes", "sort_key", "password_file", "num_passes", "keys",
                                  "lr", "secret_name", "use_auth", "token_budget", "token_embeddings"])
def test_plain_names(name: str) -> None:
    assert not is_secret_name(name)


def test_redact_text_and_mapping() -> None:
    text = f"export API_KEY={S}\ncurl -H 'X-API-Key: {S}' https://x\nloss: 0.5"
    assert S not in redact_text(text) and "loss: 0.5" in redact_text(text)
    assert redact_text(f"value {S} echoed", known=[S]) == "value *** echoed"
    data = {"hparams": {"lr": 0.1, "max_tokens": 512}, "wandb": {"api_key": S, "enabled": True},
            "password": 1234567, "token": None, "db_url": f"postgres://u:{S}@h/db", "creds": {"user": "a", "pw": S}}
    out = redact_mapping(data)
    assert S not in json.dumps(out) and "1234567" not in json.dumps(out)
    assert out["hparams"] == {"lr": 0.1, "max_tokens": 512} and out["wandb"] == {"api_key": "***", "enabled": True}
    assert out["token"] is None  # says no token was given, not what it is


def test_experiment_metadata_is_redacted(tmp_path: Path) -> None:
    run_python(f"""
        from exprag_plus import Experiment
        with Experiment("meta", metadata={{"api_key": "{S}", "hparams": {{"lr": 0.1}},
                                          "db": "mysql://root:{S}@db/x"}}, root="runs") as exp:
            exp.track({{"loss": 0.5}})
    """, cwd=tmp_path)
    path = next((tmp_path / "runs").glob("*.jsonl"))
    assert S not in path.read_text()
    start = read_lines(path)[0]
    assert start["metadata"] == {"api_key": "***", "hparams": {"lr": 0.1}, "db": "mysql://***@db/x"}


SCHEMA = """\
objective: call_api
inputs:
  - parameter: api_key
  - parameter: n
outputs:
  - parameter: out
actions:
  - commands:
      - command: echo "key <<parameter:api_key>>" >&2; echo <<parameter:n>>
        stdout: <<parameter:out>>
"""


def test_task_run_never_records_a_secret_input(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text(SCHEMA)
    runs = tmp_path / "runs"
    p = cli("task", "run", "task.yaml", "--input", f"api_key={S}", "--input", "n=7", "--json", "--root", str(runs),
            cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["outputs"] == {"out": 7}
    path = next(runs.glob("*.jsonl"))
    raw = path.read_text()
    assert S not in raw, raw
    start, task = read_lines(path)[0], next(r for r in read_lines(path) if r["type"] == "task")
    assert start["metadata"]["task"]["inputs"] == {"api_key": "***", "n": 7}
    assert task["inputs"] == {"api_key": "***", "n": 7} and task["outputs"] == {"out": 7}
    assert "***" in task["commands"][0]["command"] and task["commands"][0]["stderr"].strip() == "key ***"
    for f in (runs / start["run_id"]).rglob("*"):  # nor any other file the run wrote
        assert not f.is_file() or S.encode() not in f.read_bytes()


def test_a_failed_task_does_not_print_or_record_the_secret(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text(SCHEMA.replace("echo <<parameter:n>>", "echo <<parameter:n>>; exit 3"))
    runs = tmp_path / "runs"
    p = cli("task", "run", "task.yaml", "--input", f"api_key={S}", "--input", "n=7", "--root", str(runs), cwd=tmp_path)
    assert p.returncode != 0 and "exit code 3" in p.stderr
    assert S not in p.stderr + p.stdout
    assert S not in next(runs.glob("*.jsonl")).read_text()


def test_process_argv_is_redacted_in_a_real_run(tmp_path: Path) -> None:
    run_python(f"""
        import sys
        sys.argv = ["load.py", "mysql", "-p{S}", "--wandb-key", "{S}x", "-H", "Cookie: sid={S}y"]
        from exprag_plus import Experiment
        Experiment("argv", root="runs").close()
    """, cwd=tmp_path)
    raw = next((tmp_path / "runs").glob("*.jsonl")).read_text()
    assert S not in raw and json.loads(raw.splitlines()[0])["process"]["argv"] == [
        "load.py", "mysql", "-p***", "--wandb-key", "***", "-H", "Cookie: ***"]


def test_secret_named_keys_in_tracked_values_are_redacted(runs_dir: Path) -> None:
    with Experiment("track", root=str(runs_dir), snapshot=False) as exp:
        exp.track({"step": 1, "loss": 0.5, "max_tokens": 512})
        exp.track({"step": 2, "wandb": {"api_key": S}, "password": S, "loss": 0.25, "auth": True})
    raw = Path(exp.path).read_text()
    assert S not in raw
    tracks = [r for r in read_lines(exp.path) if r["type"] == "track"]
    assert tracks[0]["value"] == {"step": 1, "loss": 0.5, "max_tokens": 512}
    assert tracks[1]["value"] == {"step": 2, "wandb": {"api_key": "***"}, "password": "***", "loss": 0.25,
                                  "auth": True}
    assert read_lines(exp.path)[-1]["summary"]["loss"]["count"] == 2


def test_an_uncaught_task_failure_does_not_put_the_secret_in_run_end(tmp_path: Path) -> None:
    (tmp_path / "task.yaml").write_text(SCHEMA.replace("echo <<parameter:n>>", "echo <<parameter:n>>; exit 3"))
    p = run_python(f"""
        from exprag_plus import Experiment
        with Experiment("uncaught", root="runs") as exp:
            exp.run_task("task.yaml", {{"api_key": "{S}", "n": 7}})
    """, cwd=tmp_path, check=False)
    assert p.returncode == 1 and "TaskFailed" in p.stderr and "exit code 3" in p.stderr
    records_ = read_lines(next((tmp_path / "runs").glob("*.jsonl")))
    assert records_[-1]["status"] == "failed" and "exit code 3" in records_[-1]["error"]["message"]
    assert S not in json.dumps(records_) and S not in p.stderr


TOKENS = ["sk-" + "1" * 16, "sk_live_" + "1" * 10, "rk_test_" + "1" * 10, "whsec_" + "1" * 16,
          *[f"gh{c}_" + "1" * 20 for c in "pousr"], "github_pat_" + "1" * 20, "glpat-" + "1" * 16,
          *[f"xox{c}-" + "1" * 10 for c in "abposr"], "xapp-" + "1" * 10, "AKIA" + "1" * 16, "ASIA" + "1" * 16,
          "AIza" + "1" * 30, "ya29." + "1" * 20, "hf_" + "1" * 20, "npm_" + "1" * 30, "pypi-" + "1" * 40,
          "SG." + "1" * 16 + "." + "1" * 16, *[f"shp{k}_" + "a" * 32 for k in ("at", "ss", "ca", "pa")],
          "dop_v1_" + "a" * 64, "eyJ" + "1" * 10 + "." + "1" * 10 + "."]


@pytest.mark.parametrize("token", TOKENS)
def test_every_token_shape_passes_the_prefix_check_that_guards_its_pattern(token: str) -> None:
    """_spans runs the token pattern only on text holding one of _TOKEN_PREFIXES: each shape's bare form
    (a body of digits, so it holds no other prefix) must still be caught."""
    from exprag_plus import redact

    assert re.fullmatch(redact._TOKEN, token), token
    assert redact_text(f"use {token} here") == f"use {REDACTED} here"
    assert redact_argv(["prog", token]) == ["prog", REDACTED]


def test_notes_tags_errors_and_printed_task_outputs_are_redacted(tmp_path: Path) -> None:
    """Red team (trial 10): notes, tags and an exception's text were stored verbatim (then shown by `notes`,
    `report`, and pushed); `task run` printed a secret input that its command echoed."""
    runs = tmp_path / "runs"
    p = run_python(f"""
        from exprag_plus import Experiment
        with Experiment("t", root={str(runs)!r}, snapshot=False) as exp:
            exp.note("deploy with --token ghp_{'z' * 36}")
            exp.tag("xoxb-1234567890-abcdefghij", "keep")
            raise RuntimeError("Authorization: Bearer ghp_{'e' * 36} password=errpw12345")
    """, cwd=tmp_path, check=False)
    assert p.returncode != 0
    p = cli("note", "latest", f"key sk-TAGsecret1234567890abcd and AKIAABCDEFGHIJKLMNOP", "--root", str(runs), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    p = cli("tag", "latest", "sk-TAGsecret1234567890abcd", "--root", str(runs), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    raw = next(runs.glob("*.jsonl")).read_text()
    for secret in ("ghp_zzz", "xoxb-1234567890", "ghp_eee", "errpw12345", "sk-TAGsecret", "AKIAABCDEFGHIJKLMNOP"):
        assert secret not in raw, secret
    recs = read_lines(next(runs.glob("*.jsonl")))
    assert "keep" in next(r for r in recs if r["type"] == "tag")["add"]
    assert recs[-1]["type"] == "tag" and recs[-1]["add"] == ["***"]
    (tmp_path / "task.yaml").write_text(SCHEMA.replace("echo <<parameter:n>>", 'echo "$EXPRAG_PARAM_api_key <<parameter:n>>"'))
    for extra in ([], ["--dry-run"]):
        p = cli("task", "run", "task.yaml", "--input", f"api_key={S}", "--input", "n=7", *extra, "--json",
                "--root", str(runs), cwd=tmp_path)
        assert p.returncode == 0 and S not in p.stdout + p.stderr, p.stdout + p.stderr


def test_a_wrapped_commands_log_holds_none_of_its_secrets(tmp_path: Path) -> None:
    """Red team (trial 10): output.log kept what the program printed of its argv's secrets and of its
    secret-named environment variables (`run -- env`), and `log` and `push` handed them out. The values the
    command got are replaced as the log is written, also when one straddles two reads of the pipe."""
    runs = tmp_path / "runs"
    (tmp_path / "p.py").write_text(
        "import os, sys, time\n"
        "print(' '.join(sys.argv[1:]), flush=True)\n"
        "sys.stdout.write('token: ' + os.environ['HF_TOKEN'][:5]); sys.stdout.flush(); time.sleep(0.3)\n"
        "print(os.environ['HF_TOKEN'][5:], flush=True)\n"
        "print(os.environ['DB_PASSWORD'], flush=True)\n"
        "print('done', flush=True)\n")
    env = {"HF_TOKEN": "hf_ENVsecret0123456789abcdef", "DB_PASSWORD": "plainvalue12345"}
    p = cli("run", "--root", str(runs), "--", sys.executable, "p.py", "--api-key", "sk-ARGVsecret1234567890",
            "--password=pw_argv_secret", "https://alice:alicepass99@host/db", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    (log,) = runs.glob("*/output.log")
    text = log.read_text()
    end = read_lines(next(runs.glob("*.jsonl")))[-1]
    for secret in ("sk-ARGVsecret1234567890", "pw_argv_secret", "alicepass99", "hf_ENVsecret0123456789abcdef",
                   "plainvalue12345"):
        assert secret not in text and secret not in json.dumps(end), (secret, text)  # nor in run_end's tail
    assert text.endswith("token: ***\n***\ndone\n") and "--api-key ***" in text, text
    p = cli("log", "latest", "--root", str(runs), cwd=tmp_path)
    assert p.returncode == 0 and "alicepass99" not in p.stdout and "done" in p.stdout


def test_only_an_end_that_could_begin_a_secret_waits() -> None:
    from exprag_plus.wrapper import _secret_start
    secrets = [b"abcdef", b"xyz123"]
    assert _secret_start(b"hello world\n", secrets) == 12
    assert _secret_start(b"hello ab", secrets) == 6 and _secret_start(b"hello abd", secrets) == 9
    assert _secret_start(b"a xy", secrets) == 2 and _secret_start(b"abcde", secrets) == 0
    assert _secret_start(b"", secrets) == 0


def test_the_shells_working_folder_is_no_secret() -> None:
    """$PWD's value was taken for a password ("pwd"), so every path under the working folder a command
    printed became *** in its log."""
    from exprag_plus.redact import known_secrets
    assert known_secrets(["python", "t.py"], {"PWD": "/home/u/proj", "OLDPWD": "/home/u", "DB_PWD": "s3cr3tpw"}) == \
        ["s3cr3tpw"]
