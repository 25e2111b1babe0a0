"""Credential redaction: every secret-looking value is replaced by `***` before it reaches a run file.

One place for the rules, so argv, metadata, task inputs, commands and their output are all judged the
same way. Names are judged by their words (`api_key`, `X-API-Key`, `PGPASSWORD`, `wandbKey`), so
look-alikes such as `max_tokens`, `--token-limit`, `--keyframes`, `pad_token_id` or `--author` stay.
Short flags are secret only after the program that reads them so (`mysql -pX`, `curl -u user:X`,
`sshpass -p X`, `redis-cli -a X`): `-p 8080` of any other program is a port. Values are also caught by
shape: provider token prefixes, JWTs, bearer tokens, URL passwords, private key blocks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from typing import Any, Dict, Iterable, List, Optional, Sequence

REDACTED = "***"
_MIN_KNOWN = 4  # a known secret value shorter than this is too common a string to replace everywhere

# --- names ------------------------------------------------------------------------------------------

_SECRET_LAST = {
    "password", "passwd", "passphrase", "pwd", "pass", "secret", "secrets", "token", "apikey", "auth",
    "authorization", "credential", "credentials", "creds", "cookie", "cookies", "bearer", "privatekey",
    "accesskey", "secretkey", "signature", "sig", "pat", "otp", "totp", "key", "dsn", "oauth",
}
# A word anywhere in the name makes it secret unless the last word says what kind of thing it is.
_SECRET_ANY = {"password", "passwd", "passphrase", "secret", "secrets", "credential", "credentials", "apikey",
               "privatekey", "accesskey", "secretkey"}
_DESCRIPTIVE_LAST = {"file", "path", "dir", "directory", "length", "len", "min", "max", "policy", "prompt", "env",
                     "var", "name", "id", "ids", "type", "count", "limit", "size", "mode", "required", "timeout"}
# Glued words: PGPASSWORD, HFTOKEN, clientsecret, OPENAIAPIKEY.
_SECRET_SUFFIX = ("password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey", "secretkey",
                  "privatekey", "authkey")
# `<x>_key` is secret unless x names a field, a column or a random-number key.
_PLAIN_KEY_PREFIX = {
    "sort", "primary", "foreign", "group", "metric", "partition", "cache", "lookup", "join", "index", "shard",
    "order", "map", "row", "column", "col", "field", "record", "label", "target", "dict", "monitor", "hot",
    "hash", "dedup", "unique", "composite", "natural", "public", "pub", "text", "image", "input", "output",
    "data", "dataset", "feature", "prompt", "response", "answer", "question", "context", "caption", "audio",
    "video", "value", "rng", "prng", "random", "seed", "split", "batch", "sample", "example", "id", "dim",
    "attention", "query", "kv", "cache", "config", "state", "result", "score", "reward", "loss", "model",
    "checkpoint", "layer", "module", "param", "weight", "name", "file", "path", "dir", "no", "num", "max", "min",
}
# `<x>_token` is a tokenizer's special token, not a credential.
_PLAIN_TOKEN_PREFIX = {"pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "start", "end", "stop",
                       "decoder", "image", "additional", "begin", "num", "max", "min", "new", "per"}
# `--no-password`, `--use-auth`: booleans about a secret, not one.
_FLAG_PREFIX = {"no", "use", "with", "without", "enable", "disable", "skip", "ask", "require", "allow", "show",
                "print", "hide", "check", "verify", "validate", "prompt", "save", "store", "read", "load"}

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_SPLIT = re.compile(r"[^A-Za-z0-9]+")


def _words(name: str) -> List[str]:
    return [w for w in _SPLIT.split(_CAMEL.sub(r"\1_\2", name).lower()) if w]


def is_secret_name(name: Any) -> bool:
    """Does a key, option or variable name say its value is a credential?"""
    if not isinstance(name, str):
        return False
    words = _words(name)
    if not words:
        return False
    if len(words) > 1 and words[0] in _FLAG_PREFIX:
        return False
    last = words[-1]
    prev = words[-2] if len(words) > 1 else ""
    if last in _SECRET_LAST:
        if last == "key":
            return prev not in _PLAIN_KEY_PREFIX
        if last == "token":
            return prev not in _PLAIN_TOKEN_PREFIX
        return True
    if last not in _DESCRIPTIVE_LAST and any(w in _SECRET_ANY for w in words):
        return True
    glued = [w for w in words if w.endswith(_SECRET_SUFFIX) and w not in _SECRET_SUFFIX]
    return bool(glued) and (glued[-1] == last or last not in _DESCRIPTIVE_LAST)


# --- values by shape --------------------------------------------------------------------------------

_TOKEN = (
    r"(?<![A-Za-z0-9_-])(?:"
    r"sk-[A-Za-z0-9_-]{16,}|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{16,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30,}|ya29\.[A-Za-z0-9_-]{20,}"
    r"|hf_[A-Za-z0-9]{20,}|npm_[A-Za-z0-9]{30,}|pypi-[A-Za-z0-9_-]{40,}"
    r"|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}|shp(?:at|ss|ca|pa)_[A-Fa-f0-9]{32}|dop_v1_[a-f0-9]{64}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*"
    r")"
)
# What every match of _TOKEN starts with.
_TOKEN_PREFIXES = ("sk", "rk_", "whsec_", "gh", "github_pat_", "glpat-", "xox", "xapp-", "AKIA", "ASIA", "AIza",
                   "ya29.", "hf_", "npm_", "pypi-", "SG.", "shp", "dop_v1_", "eyJ")
_PRIVATE_KEY = (r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----)[\s\S]*?(-----END [A-Z0-9 ]*PRIVATE KEY"
                r"( BLOCK)?-----|\Z)")
_BEARER = r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/-]{8,}=*"
_URL_USERINFO = r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^\s/?#@'\"]*(?:@[^\s/?#@'\"]*)*)@"
_SLACK_HOOK = r"(hooks\.slack\.com/(?:services|workflows)/)[A-Za-z0-9/_-]+"
# `"api_key": "x"` and `'api_key': 'x'` (JSON or a Python dict inside an argument or an output).
_QUOTED_PAIR = (r"""(?P<q>["'])(?P<k>[A-Za-z_][\w.-]*)(?P=q)(?P<sep>\s*:\s*)"""
                r"""(?P<v>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,{}\[\]"']+)""")
# Authorization and Cookie values hold spaces (`Bearer x`, `a=1; b=2`): they run to the line's end.
_AUTH_LINE = r"(?i)(?<![\w-])((?:proxy-)?authorization|(?:set-)?cookies?)([ \t]*[:=][ \t]*)[^\s'\"`][^\n'\"`]*"
# `NAME: value` (HTTP headers, YAML, log lines).
_HEADER = r"(?<![\w-])(?P<k>[A-Za-z][\w-]*)(?P<sep>[ \t]*:[ \t]*)(?P<v>[^\s'\"`/][^\s'\"`]*)"
# `NAME=value`, `--name=value`, `?token=value&`: unquoted, or quoted with optional spaces around `=`.
_ASSIGN = (r"""(?<![\w.-])(?P<k>-{0,2}[A-Za-z_][\w.-]*)(?P<sep>=|[ \t]*=[ \t]*(?=["']))"""
           r"""(?P<v>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s&;,'"]+)""")


def _quoted_pair(m: "re.Match[str]") -> str:
    if not is_secret_name(m["k"]):
        return m[0]
    q = "'" if m["v"].startswith("'") else '"'
    return f"{m['q']}{m['k']}{m['q']}{m['sep']}{q}{REDACTED}{q}"


def _header(m: "re.Match[str]") -> str:
    return f"{m['k']}{m['sep']}{REDACTED}" if is_secret_name(m["k"]) else m[0]


def _assign(m: "re.Match[str]") -> str:
    return f"{m['k']}{m['sep']}{REDACTED}" if is_secret_name(m["k"]) else m[0]


def _userinfo(m: "re.Match[str]") -> str:
    cred = m["cred"]
    if ":" in cred or "@" in cred or (len(cred) >= 16 and "." not in cred):
        return f"{m['scheme']}{REDACTED}@"
    return m[0]  # a bare user name (ssh://git@host)


def _spans(text: str) -> str:
    """Secrets recognised inside one piece of text, whatever surrounds them.

    Each pattern runs only on text holding what any of its matches must hold, so most words and lines
    skip them all, and a process that never meets such text never compiles them (~10 ms at start-up)."""
    if "PRIVATE KEY" in text:
        text = re.sub(_PRIVATE_KEY, lambda m: f"{m[1]}{REDACTED}" + (m[3] or ""), text)
    colon = ":" in text
    if colon and ('"' in text or "'" in text):
        text = re.sub(_QUOTED_PAIR, _quoted_pair, text)
    low = text.lower()
    if "authorization" in low or "cookie" in low:
        text = re.sub(_AUTH_LINE, lambda m: m[1] + m[2] + REDACTED, text)
    if colon:
        text = re.sub(_HEADER, _header, text)
    if "=" in text:
        text = re.sub(_ASSIGN, _assign, text)
    if "://" in text and "@" in text:
        text = re.sub(_URL_USERINFO, _userinfo, text)
    if "hooks.slack.com/" in text:
        text = re.sub(_SLACK_HOOK, lambda m: m[1] + REDACTED, text)
    if "bearer" in low:
        text = re.sub(_BEARER, lambda m: m[1] + m[2] + REDACTED, text)
    if any(p in text for p in _TOKEN_PREFIXES):
        text = re.sub(_TOKEN, REDACTED, text)
    return text


# --- command words ----------------------------------------------------------------------------------

_ALL, _USERPASS, _SMB, _COMMA = "all", "userpass", "smb", "comma"
_MYSQL = {"-p": _ALL}
_CLIENTS: Dict[str, Dict[str, str]] = {
    **{p: _MYSQL for p in ("mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlcheck", "mysqlshow", "mysqlsh",
                           "mysqlslap", "mysqlbinlog", "mysqlpump", "mariadb", "mariadb-dump", "mariadb-admin",
                           "mariadb-import", "mariadb-check", "mariadb-show")},
    **{p: {"-p": _ALL} for p in ("sshpass", "mongo", "mongosh", "mongodump", "mongorestore", "mongoexport",
                                 "mongoimport", "mongostat", "mongotop", "7z", "7za", "7zr", "rar", "unrar")},
    **{p: {"-a": _ALL} for p in ("redis-cli", "keydb-cli", "valkey-cli")},
    **{p: {"-P": _ALL} for p in ("zip", "unzip", "sqlcmd", "bcp", "ipmitool")},
    **{p: {"-w": _ALL} for p in ("ldapsearch", "ldapmodify", "ldapadd", "ldapdelete", "ldapwhoami", "ldappasswd",
                                 "ldapcompare", "ldapmodrdn")},
    "curl": {"-u": _USERPASS, "--user": _USERPASS, "-U": _USERPASS, "--proxy-user": _USERPASS},
    "wget": {"--user": _USERPASS},
    "smbclient": {"-U": _SMB, "--user": _SMB}, "rpcclient": {"-U": _SMB}, "net": {"-U": _SMB},
    "lftp": {"-u": _COMMA},
    "openssl": {"-passin": _ALL, "-passout": _ALL, "-pass": _ALL, "-k": _ALL},
}
# `docker login -p X` (but `docker run -p 8080:80` is a port).
_LOGIN_PROGRAMS = {"docker", "podman", "nerdctl", "buildah", "skopeo", "oras", "helm", "cf", "az"}
_LOGIN = {"-p": _ALL, "--password": _ALL}
_OPTION = r"-{0,2}[A-Za-z_][\w.-]*"
_FLAG = r"--[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?:=.*)?|-[A-Za-z]|--"


def _hide(value: str, kind: str) -> str:
    if kind == _ALL or not value:
        return REDACTED
    sep = {_USERPASS: ":", _SMB: "%", _COMMA: ","}[kind]
    user, found, secret = value.partition(sep)
    if not found:
        return value  # a user name alone: the program asks for the password
    return f"{user}{sep}{REDACTED}" if secret else f"{REDACTED}{sep}"  # `-u TOKEN:` puts the token first


def _program(word: str) -> str:
    base = os.path.basename(word.strip("'\"")).lower()
    return base[:-4] if base.endswith(".exe") else base


def _words_redacted(words: Sequence[str], text_of: Any) -> List[str]:
    """Redact a command's words: values after secret options and known clients' password flags."""
    out: List[str] = []
    pending = ""
    client: Dict[str, str] = {}
    program = ""
    for word in words:
        word = str(word)
        if pending:
            kind, pending = pending, ""
            if not re.fullmatch(_FLAG, word):
                out.append(_hide(word, kind))
                continue
        if not word.startswith("-"):
            name = _program(word)
            if name in _CLIENTS:
                program, client = name, _CLIENTS[name]
            elif name in _LOGIN_PROGRAMS:
                program, client = name, {}
            elif word == "login" and program in _LOGIN_PROGRAMS:
                client = _LOGIN
        else:
            name, eq, value = word.partition("=")
            if name in client:
                if not eq:
                    pending = client[name]
                    out.append(word)
                elif value:
                    out.append(f"{name}={_hide(value, client[name])}")
                else:
                    out.append(word)
                continue
            if not word.startswith("--") and word[:2] in client and len(word) > 2:
                out.append(word[:2] + _hide(word[2:], client[word[:2]]))  # -pSECRET, -uuser:SECRET
                continue
            if re.fullmatch(_OPTION, name) and len(name.lstrip("-")) > 1 and is_secret_name(name):
                if not eq:
                    pending = _ALL
                    out.append(word)
                else:
                    out.append(f"{name}={REDACTED}" if value else word)
                continue
        if "=" in word and not word.startswith("-"):
            name, _, value = word.partition("=")
            if value and re.fullmatch(_OPTION, name) and is_secret_name(name):
                out.append(f"{name}={REDACTED}")
                continue
        out.append(text_of(word))
    return out


_WORD = r"""(?:[^\s"']+|"(?:[^"\\]|\\.)*"|'[^']*')+"""


def redact_text(text: str, known: Iterable[str] = ()) -> str:
    """Free text (a command line, a program's output, a message) with its secrets replaced by `***`.

    `known` are secret values already known (task inputs with secret names): every occurrence goes.
    """
    if not isinstance(text, str) or not text:
        return text
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _spans(text)
    spans = [(m.start(), m.end()) for m in re.finditer(_WORD, text)]
    if not any(text[a] == "-" for a, _ in spans):
        return text  # no option in it, so no option value to hide
    new = _words_redacted([text[a:b] for a, b in spans], lambda w: w)
    pieces, last = [], 0
    for (a, b), word in zip(spans, new):
        pieces += [text[last:a], word]
        last = b
    return "".join(pieces) + text[last:]


_SHELL_DIRS = ("PWD", "OLDPWD")  # "pwd" reads as a password, but these are the shell's working folders


def known_secrets(argv: Sequence[Any], environ: Dict[str, str]) -> List[str]:
    """The secret values a command gets (what `redact_argv` hides in its argv, and the values of its
    secret-named environment variables): a program that prints them must not have them in a log."""
    out = set()
    for word, shown in zip((str(a) for a in argv), redact_argv(argv)):
        if word != shown:
            head = len(os.path.commonprefix([word, shown]))
            tail = len(os.path.commonprefix([word[head:][::-1], shown[head:][::-1]]))
            out.add(word[head:len(word) - tail])
    out.update(v for k, v in environ.items() if is_secret_name(k) and k not in _SHELL_DIRS)
    return sorted((s for s in out if len(s) >= 6), key=len, reverse=True)


def redact_argv(argv: Sequence[Any]) -> List[str]:
    """A process's argv with credential-looking values replaced by `***`."""
    return _words_redacted([str(a) for a in argv], lambda w: redact_text(w) if any(c.isspace() for c in w) else _spans(w))


def secret_values(mapping: Any) -> List[str]:
    """The text forms of every value held under a secret name, longest first (to replace in free text)."""
    found: List[str] = []

    def leaves(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                leaves(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                leaves(v)
        elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
            found.append(str(value))

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if is_secret_name(k):
                    leaves(v)
                    if isinstance(v, (dict, list)):
                        found.append(json.dumps(v))
                else:
                    walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(mapping)
    forms = {f for s in found for f in (s, shlex.quote(s), json.dumps(s)[1:-1]) if len(s) >= _MIN_KNOWN}
    return sorted(forms, key=len, reverse=True)


def redact_mapping(obj: Any, known: Optional[Iterable[str]] = None) -> Any:
    """Metadata-like data with the value of every secret-named key (at any depth) replaced by `***`.

    Strings elsewhere pass through `redact_text`; None, booleans and empty strings under a secret name
    stay (they say whether a secret was given, not what it is).
    """
    known = list(known) if known is not None else secret_values(obj)
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_name(k) and v is not None and not isinstance(v, bool) and v != ""
                    else redact_mapping(v, known)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_mapping(v, known) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj, known)
    return obj


_name_cache: Dict[Any, bool] = {}


def has_secret_key(value: Dict[Any, Any], _depth: int = 0) -> bool:
    """Does a tracked dict hold a value under a secret-named key? Cheap: names are judged once each."""
    for k, v in value.items():
        secret = _name_cache.get(k)
        if secret is None:
            secret = is_secret_name(k)
            if len(_name_cache) < 10_000:
                _name_cache[k] = secret
        if secret and v is not None and not isinstance(v, bool) and v != "":
            return True
        if type(v) is dict and _depth < 16 and has_secret_key(v, _depth + 1):
            return True
    return False

