"""The signalbox bus contract in plain Python (see docs/PROTOCOL.md).

Shared by listener.py and publish.py; small enough to copy into a project:
topic sanitising (section 2.2), UUIDv7 ids and millisecond UTC times for
envelopes (section 4), sorting any payload into envelope, JSON, text or
binary (section 5), and a paho-mqtt 2.x client made from a broker URL.
Only the standard library and paho-mqtt are needed.
"""

import datetime
import json
import os
import re
import urllib.parse
import uuid

import paho.mqtt.client as mqtt

SEVERITIES = ("debug", "info", "warning", "error")
RESERVED = ("_health", "_failed", "_replay", "_audit", "_ping", "_roster")
MAX_LEVEL_BYTES = 128

# Unicode White_Space: what section 2.2 trims. (Python's str.strip() would
# also strip U+001C..U+001F, which the contract replaces by `_` instead.)
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
LINE_BREAKS = "\n\r\x0b\x0c\x85\u2028\u2029"
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def is_control(c: str) -> bool:
    """Unicode category Cc: U+0000..U+001F and U+007F..U+009F."""
    u = ord(c)
    return u < 0x20 or 0x7F <= u <= 0x9F


# -- topics (section 2) -------------------------------------------------------

def _forbidden_in_level(c: str) -> bool:
    u = ord(c)
    return (c in "/+#" or is_control(c)
            or 0xFDD0 <= u <= 0xFDEF or (u & 0xFFFE) == 0xFFFE)  # noncharacters


def sanitise_level(level: str) -> str:
    """One topic level: trim, replace forbidden characters by `_`, cut to 128
    bytes (and trim what the cut exposed), no leading `$`, never empty."""
    out, size = [], 0
    for c in level.strip(WHITE_SPACE):
        c = "_" if _forbidden_in_level(c) else c
        size += len(c.encode("utf-8"))
        if size > MAX_LEVEL_BYTES:
            break
        out.append(c)
    level = "".join(out).rstrip(WHITE_SPACE)
    if level.startswith("$"):
        level = "_" + level[1:]
    return level or "_"


def sanitise_prefix(prefix: str) -> str:
    """The prefix may have several levels (corp/signalbox); empty ones are dropped."""
    levels = [sanitise_level(l) for l in prefix.split("/") if l.strip(WHITE_SPACE)]
    return "/".join(levels) or "_"


def sanitise_env(env: str) -> str:
    """A level that is never a reserved name: `_health` becomes `__health`."""
    env = sanitise_level(env)
    return "_" + env if env in RESERVED else env


def event_topic(prefix: str, env: str, system: str, entity, event: str) -> str:
    """{prefix}/{env}/{system}/{entity...}/{event}, every level sanitised."""
    levels = [sanitise_env(env), sanitise_level(system)]
    levels += [sanitise_level(e) for e in entity] + [sanitise_level(event)]
    return "/".join([sanitise_prefix(prefix)] + levels)


def reserved_name(prefix: str, topic: str):
    """The reserved namespace (`_health`, ...) a topic is in, else None."""
    prefix = sanitise_prefix(prefix)
    if not topic.startswith(prefix + "/"):
        return None
    first = topic[len(prefix) + 1:].split("/", 1)[0]
    return first if first in RESERVED else None


def is_topic_name(text) -> bool:
    """A topic one can publish to: not empty, no wildcard, no NUL."""
    return isinstance(text, str) and text != "" and not any(c in text for c in "+#\0")


# -- envelopes (section 4) ------------------------------------------------------

def uuid7(unix_ms: int) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, 74 random bits."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & ((1 << 48) - 1)) << 80      # unix_ts_ms
    value |= 0x7 << 76                             # ver
    value |= ((rand >> 62) & 0xFFF) << 64          # rand_a, 12 bits
    value |= 0b10 << 62                            # var
    value |= rand & ((1 << 62) - 1)                # rand_b, 62 bits
    return str(uuid.UUID(int=value))


def now_ms() -> int:
    return int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000)


def rfc3339_ms(unix_ms: int) -> str:
    """UTC with milliseconds and Z, e.g. 2026-11-24T19:03:00.123Z."""
    t = datetime.datetime.fromtimestamp(unix_ms // 1000, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{unix_ms % 1000:03d}Z"


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(re.sub(r"[Zz]$", "+00:00", text.replace(" ", "T")))


def summary_from(text: str) -> str:
    """A one-line summary from free text: each control character or line
    break becomes a space, the whitespace around it collapses into that one
    space, and the ends are trimmed. May be empty (then invalid)."""
    out, gap, replaced = [], "", False
    for c in text:
        if is_control(c) or c in LINE_BREAKS:
            replaced = True
        elif c in WHITE_SPACE:
            gap += c
        else:
            out.append(" " if replaced else gap)
            out.append(c)
            gap, replaced = "", False
    return "".join(out).lstrip(WHITE_SPACE)


def _is_uuid(text) -> bool:
    try:
        return isinstance(text, str) and uuid.UUID(text).int != 0
    except ValueError:
        return False


def _is_time(text) -> bool:
    if not isinstance(text, str) or not RFC3339.match(text):
        return False
    try:
        parse_time(text)
        return True
    except ValueError:
        return False


def _opt_str(doc, key) -> bool:
    return doc.get(key) is None or isinstance(doc[key], str)


def as_envelope(doc):
    """doc if it is a valid envelope, else None. Lenient where signalbox's
    own reader is: null optional fields count as absent, a missing severity
    means info, severity names in any case, `warn` and `err` accepted."""
    if not isinstance(doc, dict) or type(doc.get("v")) is not int or doc["v"] != 1:
        return None
    source, summary, severity, links = (
        doc.get("source"), doc.get("summary"), doc.get("severity"), doc.get("links"))
    ok = (
        _is_uuid(doc.get("id"))
        and is_topic_name(doc.get("topic"))
        and _is_time(doc.get("time"))
        and isinstance(source, dict)
        and isinstance(source.get("bridge"), str) and source["bridge"].strip() != ""
        and _opt_str(source, "host") and _opt_str(source, "user")
        and _opt_str(doc, "agent")
        and (severity is None or (isinstance(severity, str) and
                                  severity.strip().lower() in SEVERITIES + ("warn", "err")))
        and isinstance(summary, str) and summary.strip() != ""
        and not any(c in LINE_BREAKS or (is_control(c) and c != "\t") for c in summary)
        and (links is None or (isinstance(links, dict)
                               and all(isinstance(v, str) for v in links.values())))
        and (doc.get("reply_to") is None or is_topic_name(doc["reply_to"]))
    )
    return doc if ok else None


# -- any payload (section 5) ------------------------------------------------------

def decode(payload: bytes):
    """(kind, value) for any payload, never raising: ("envelope", dict),
    ("json", value), ("text", str) or ("binary", bytes)."""
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        pass
    else:
        env = as_envelope(doc)
        return ("envelope", env) if env is not None else ("json", doc)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "binary", payload
    if any(is_control(c) and c not in "\t\r\n" for c in text):
        return "binary", payload
    return "text", text


def summary_line(kind: str, value, limit: int = 400) -> str:
    """One line for any payload, as `signalbox tail` shows it: the summary,
    compact JSON, the first non-blank line of text, or <N bytes binary>."""
    if kind == "envelope":
        line = value["summary"]
    elif kind == "json":
        line = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    elif kind == "text":
        line = next((l.strip() for l in value.splitlines() if l.strip()), "")
    else:
        line = f"<{len(value)} bytes binary>"
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return "".join(" " if is_control(c) or c in LINE_BREAKS else c for c in line)


# -- MQTT -------------------------------------------------------------------------

def make_client(client_id: str, url: str, clean_session: bool, manual_ack: bool = False):
    """A paho-mqtt 2.x client (MQTT 3.1.1) for mqtt://[user:pass@]host[:port]
    or mqtts://...; returns (client, host, port). Raises ValueError on a bad URL."""
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
        raise ValueError(f"unsupported broker URL {url!r} (use mqtt://host:port)")
    tls = u.scheme in ("mqtts", "ssl")
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if u.username:
        client.username_pw_set(urllib.parse.unquote(u.username),
                               urllib.parse.unquote(u.password or ""))
    if tls:
        client.tls_set()
    return client, u.hostname or "127.0.0.1", u.port or (8883 if tls else 1883)
