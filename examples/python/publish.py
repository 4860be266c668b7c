#!/usr/bin/env python3
"""Publish one signalbox envelope (see docs/PROTOCOL.md).

    python3 publish.py [options] SYSTEM [ENTITY...] EVENT

builds the topic {prefix}/{env}/SYSTEM/ENTITY.../EVENT (each level sanitised),
publishes one envelope on it at QoS 1, waits for the broker's PUBACK and
prints the envelope as one line of JSON on stdout.

Examples:
    python3 publish.py git kernel commit -m 'jkeating pushed to kernel'
    python3 publish.py --env prod --retain cron backup finished \\
        -m 'backup finished (exit 0)' --body '{"exit": 0}'

Exit codes: 0 published and confirmed; 2 bad arguments;
75 (EX_TEMPFAIL) the broker could not be reached or did not confirm.

Needs: pip install paho-mqtt  (2.x)
"""

import argparse
import getpass
import json
import os
import socket
import sys

import signalbox_bus as bus

EX_TEMPFAIL = 75


def main() -> int:
    p = argparse.ArgumentParser(
        description="Publish one signalbox envelope and wait for the broker's PUBACK.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    p.add_argument("levels", nargs="+", metavar="LEVEL", help="SYSTEM [ENTITY...] EVENT")
    p.add_argument("-m", "--summary", help="one-line summary (default: the topic)")
    p.add_argument("--severity", choices=bus.SEVERITIES, default="info")
    p.add_argument("--body", help="JSON value for the body field")
    p.add_argument("--link", action="append", default=[], metavar="NAME=URL")
    p.add_argument("--agent", help="person or account responsible")
    p.add_argument("--retain", action="store_true", help="publish retained (a state)")
    p.add_argument("--broker", default=os.environ.get("SIGNALBOX_BROKER", "mqtt://127.0.0.1:1883"),
                   help="broker URL (env SIGNALBOX_BROKER, default mqtt://127.0.0.1:1883)")
    p.add_argument("--prefix", default=os.environ.get("SIGNALBOX_PREFIX", "signalbox"))
    p.add_argument("--env", default=os.environ.get("SIGNALBOX_ENV", "dev"))
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for PUBACK (10)")
    args = p.parse_args()

    if len(args.levels) < 2:
        p.error("give at least SYSTEM EVENT (usually SYSTEM ENTITY EVENT)")
    system, *entity, event = args.levels
    topic = bus.event_topic(args.prefix, args.env, system, entity, event)
    summary = bus.summary_from(args.summary if args.summary is not None else topic)
    if not summary:
        p.error("the summary is empty")

    ms = bus.now_ms()
    envelope = {
        "v": 1,
        "id": bus.uuid7(ms),
        "topic": topic,
        "time": bus.rfc3339_ms(ms),
        "source": {"bridge": "python-example", "host": socket.gethostname(), "user": getpass.getuser()},
        "severity": args.severity,
        "summary": summary,
    }
    if args.agent:
        envelope["agent"] = args.agent
    if args.link:
        if not all("=" in l for l in args.link):
            p.error("--link takes NAME=URL")
        envelope["links"] = dict(l.split("=", 1) for l in args.link)
    if args.body is not None:
        try:
            envelope["body"] = json.loads(args.body)
        except json.JSONDecodeError as exc:
            p.error(f"--body is not JSON: {exc}")
    payload = json.dumps(envelope, ensure_ascii=False, separators=(",", ":"))

    try:
        client, host, port = bus.make_client(f"signalbox-pub-{envelope['id'][-12:]}",
                                             args.broker, clean_session=True)
    except ValueError as exc:
        p.error(str(exc))
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        print(f"publish.py: cannot reach {args.broker}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    client.loop_start()
    try:
        info = client.publish(topic, payload.encode("utf-8"), qos=1, retain=args.retain)
        info.wait_for_publish(timeout=args.timeout)
        if not info.is_published():
            print(f"publish.py: no PUBACK from {args.broker} within {args.timeout:g} s", file=sys.stderr)
            return EX_TEMPFAIL
    except (RuntimeError, ValueError) as exc:
        print(f"publish.py: publish failed: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        client.disconnect()
        client.loop_stop()
    print(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
