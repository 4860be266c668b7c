#!/usr/bin/env python3
"""Check docs/envelope.schema.json against the examples in docs/PROTOCOL.md.

Usage:
    python3 docs/check_schema.py [ENVELOPE.json ...]

Needs: pip install jsonschema

What it checks:
- the schema itself is a valid draft 2020-12 schema;
- every ```json block in PROTOCOL.md parses as JSON;
- blocks marked `<!-- check: envelope -->` are valid envelopes;
- blocks marked `<!-- check: not-envelope -->` are rejected;
- blocks marked `<!-- check: failure-record -->` hold a valid envelope (or a
  raw payload), and health/replay/roster blocks have the documented fields;
- a list of invalid envelopes below is rejected, each for its own reason;
- any files given on the command line (or `-` for stdin), each one JSON
  document or JSON Lines, are valid envelopes.

Exits 0 when everything holds, 1 otherwise, and prints one line per check
and a closing `N passed, N failed` line.
"""

import copy
import json
import pathlib
import re
import sys

try:
    from jsonschema import Draft202012Validator
except ImportError:  # pragma: no cover
    sys.exit("check_schema.py needs jsonschema: pip install jsonschema")

HERE = pathlib.Path(__file__).resolve().parent
SCHEMA_PATH = HERE / "envelope.schema.json"
PROTOCOL_PATH = HERE / "PROTOCOL.md"

BLOCK = re.compile(
    r"(?:<!--\s*check:\s*(?P<kind>[a-z-]+)\s*-->\s*\n)?```json\n(?P<body>.*?)\n```",
    re.DOTALL,
)

HEALTH_FIELDS = {
    "listener", "state", "host", "pid", "version", "started", "last_seen",
    "interval_s", "subscriptions", "counters", "last_error",
}
COUNTERS = {"received", "processed", "failed", "replayed", "duplicates"}
HEALTH_STATES = {"up", "degraded", "down", "stopped", "idle"}
RECORD_FIELDS = {"listener", "id", "topic", "error", "attempts", "first_failed", "last_failed"}
OUTCOMES = {"replayed", "failed", "capped", "unknown"}

VALID = {
    "v": 1,
    "id": "01a20ef0-9f1b-7edc-8eb9-155c24cbc20f",
    "topic": "signalbox/dev/git/kernel/commit",
    "time": "2026-11-24T19:03:00.123Z",
    "source": {"bridge": "git"},
    "severity": "info",
    "summary": "one line",
}


def mutated(**changes):
    """VALID with fields replaced; a value of ... removes the field."""
    env = copy.deepcopy(VALID)
    for key, value in changes.items():
        if value is ...:
            env.pop(key, None)
        else:
            env[key] = value
    return env


INVALID = [
    ("missing v", mutated(v=...)),
    ("v is 2", mutated(v=2)),
    ("v is a string", mutated(v="1")),
    ("missing id", mutated(id=...)),
    ("id not a UUID", mutated(id="12345")),
    ("nil id", mutated(id="00000000-0000-0000-0000-000000000000")),
    ("missing topic", mutated(topic=...)),
    ("topic with +", mutated(topic="signalbox/+/git/kernel/commit")),
    ("topic with #", mutated(topic="signalbox/dev/#")),
    ("empty topic", mutated(topic="")),
    ("missing time", mutated(time=...)),
    ("time not RFC 3339", mutated(time="24/11/2026 19:03")),
    ("time without zone", mutated(time="2026-11-24T19:03:00.123")),
    ("missing source", mutated(source=...)),
    ("source without bridge", mutated(source={"host": "pkgs01"})),
    ("source.bridge empty", mutated(source={"bridge": ""})),
    ("source.bridge blank", mutated(source={"bridge": "  "})),
    ("source.host not a string", mutated(source={"bridge": "git", "host": 1})),
    ("missing severity", mutated(severity=...)),
    ("severity not in enum", mutated(severity="critical")),
    ("missing summary", mutated(summary=...)),
    ("empty summary", mutated(summary="")),
    ("summary with LF", mutated(summary="two\nlines")),
    ("summary ending in LF", mutated(summary="one line\n")),
    ("summary with CR", mutated(summary="carriage\rreturn")),
    ("blank summary", mutated(summary=" \t ")),
    ("summary with VT", mutated(summary="vertical\x0btab")),
    ("summary with U+2028", mutated(summary="line\u2028separator")),
    ("summary with ESC", mutated(summary="\x1b[31mred")),
    ("links value not a string", mutated(links={"url": 1})),
    ("agent not a string", mutated(agent=["a"])),
    ("reply_to with #", mutated(reply_to="signalbox/dev/replies/#")),
    ("not an object", ["v", 1]),
]

EXTRA_VALID = [
    ("offset time", mutated(time="2026-11-24T20:03:00+01:00")),
    ("uppercase id", mutated(id=VALID["id"].upper())),
    ("UUIDv4 id (foreign producer)", mutated(id="9b2f6c3e-1d4a-4f7b-8c2d-5e6f7a8b9c0d")),
    ("summary with a tab and Unicode", mutated(summary="größe\tΩ 日本")),
    ("unknown fields kept", mutated(x_custom={"a": 1}, source={"bridge": "git", "queue": "q"})),
    ("body of any type", mutated(body=[1, "two", None])),
    ("reply_to", mutated(reply_to="signalbox/dev/ops/replies/1")),
]


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what, why=""):
        if ok:
            self.passed += 1
            print(f"ok    {what}")
        else:
            self.failed += 1
            print(f"FAIL  {what}{': ' + why if why else ''}")


def errors_of(validator, doc):
    return sorted(validator.iter_errors(doc), key=lambda e: list(e.path))


def first_error(validator, doc):
    errs = errors_of(validator, doc)
    if not errs:
        return ""
    e = errs[0]
    where = "/".join(str(p) for p in e.path) or "(root)"
    return f"{where}: {e.message}"


def check_health(doc):
    if not isinstance(doc, dict):
        return "not an object"
    missing = HEALTH_FIELDS - doc.keys()
    if missing:
        return f"missing {sorted(missing)}"
    if doc["state"] not in HEALTH_STATES:
        return f"state {doc['state']!r}"
    if set(doc["counters"]) != COUNTERS:
        return f"counters {sorted(doc['counters'])}"
    if doc["state"] == "idle" and not {"last_run", "spool_depth"} <= doc.keys():
        return "idle report without last_run/spool_depth"
    return ""


def check_record(validator, doc):
    missing = RECORD_FIELDS - doc.keys()
    if missing:
        return f"missing {sorted(missing)}"
    if ("envelope" in doc) == ("payload" in doc):
        return "needs exactly one of envelope and payload"
    if "envelope" in doc:
        why = first_error(validator, doc["envelope"])
        if why:
            return f"envelope: {why}"
        if doc["envelope"]["id"] != doc["id"]:
            return "id differs from envelope id"
    elif not isinstance(doc.get("payload_base64"), bool):
        return "payload without payload_base64 flag"
    return ""


def check_replay_request(doc):
    if doc.get("all") is True or (
        isinstance(doc.get("ids"), list) and all(isinstance(i, str) for i in doc["ids"])
    ):
        return ""
    return "needs ids (list of strings) or all: true"


def check_outcome(doc):
    if not isinstance(doc.get("listener"), str) or not isinstance(doc.get("results"), list):
        return "needs listener and results"
    for r in doc["results"]:
        if r.get("outcome") not in OUTCOMES or not isinstance(r.get("id"), str):
            return f"bad result {r}"
    return ""


def check_roster(doc):
    if not isinstance(doc, list) or not all(isinstance(n, str) for n in doc):
        return "not a list of strings"
    if doc != sorted(set(doc)):
        return "not sorted without duplicates"
    return ""


def main(argv):
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    report = Report()

    try:
        Draft202012Validator.check_schema(schema)
        report.check(True, "envelope.schema.json is a valid draft 2020-12 schema")
    except Exception as exc:  # noqa: BLE001
        report.check(False, "envelope.schema.json is a valid draft 2020-12 schema", str(exc))
        return 1
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)

    text = PROTOCOL_PATH.read_text(encoding="utf-8")
    blocks = list(BLOCK.finditer(text))
    report.check(len(blocks) >= 10, f"PROTOCOL.md has {len(blocks)} json blocks")
    kinds = {}
    for m in blocks:
        line = text.count("\n", 0, m.start("body")) + 1
        kind = m.group("kind") or "unmarked"
        kinds[kind] = kinds.get(kind, 0) + 1
        what = f"PROTOCOL.md:{line} ({kind})"
        try:
            doc = json.loads(m.group("body"))
        except json.JSONDecodeError as exc:
            report.check(False, what, f"not JSON: {exc}")
            continue
        if kind == "envelope":
            report.check(not errors_of(validator, doc), what, first_error(validator, doc))
        elif kind == "not-envelope":
            report.check(bool(errors_of(validator, doc)), what, "accepted as an envelope")
        elif kind == "health":
            why = check_health(doc)
            report.check(not why, what, why)
        elif kind == "failure-record":
            why = check_record(validator, doc)
            report.check(not why, what, why)
        elif kind == "replay-request":
            why = check_replay_request(doc)
            report.check(not why, what, why)
        elif kind == "replay-outcome":
            why = check_outcome(doc)
            report.check(not why, what, why)
        elif kind == "roster":
            why = check_roster(doc)
            report.check(not why, what, why)
        else:
            report.check(False, what, f"unknown marker {kind!r}")
    for needed in ("envelope", "not-envelope", "health", "failure-record", "roster"):
        report.check(kinds.get(needed, 0) > 0, f"PROTOCOL.md has {needed} examples")

    for name, doc in EXTRA_VALID:
        report.check(not errors_of(validator, doc), f"accepts: {name}", first_error(validator, doc))
    for name, doc in INVALID:
        report.check(bool(errors_of(validator, doc)), f"rejects: {name}", "accepted")

    for arg in argv:
        raw = sys.stdin.read() if arg == "-" else pathlib.Path(arg).read_text(encoding="utf-8")
        name = "stdin" if arg == "-" else arg
        try:  # one JSON document, or JSON Lines
            json.loads(raw)
            sources = [(name, raw)]
        except json.JSONDecodeError:
            sources = [(f"{name}:{i}", l) for i, l in enumerate(raw.splitlines(), 1) if l.strip()]
        for name, raw in sources:
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError as exc:
                report.check(False, name, f"not JSON: {exc}")
                continue
            report.check(not errors_of(validator, doc), f"{name} is an envelope", first_error(validator, doc))

    print(f"{report.passed} passed, {report.failed} failed")
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
