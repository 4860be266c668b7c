#!/usr/bin/env python3
"""A small signalbox listener (see docs/PROTOCOL.md).

    python3 listener.py [--broker URL] [--name NAME] [FILTER ...]

Subscribes at QoS 1 with a persistent session and prints one line per
message, as `signalbox tail` does: `HH:MM:SS.mmm topic summary` (the
envelope's time, else the arrival time, in local time; ` [retained]` for a
retained message). It de-duplicates envelopes by id, acknowledges each
message only after handling it, and takes part in the bus like any listener:

- a retained health report on {prefix}/_health/{name} every --interval
  seconds, with a Last Will `down` and a final `stopped` on Ctrl-C/SIGTERM;
- answers {prefix}/_ping by republishing its health report at once;
- adds its name to the retained roster {prefix}/_roster.

Its handler only prints, so it never writes failure records and has nothing
to replay; a real listener publishes a failure record before acknowledging a
message it could not handle (PROTOCOL.md section 8).

Examples:
    python3 listener.py
    SIGNALBOX_BROKER=mqtt://bus01:1883 python3 listener.py --name ops-tail 'signalbox/prod/#'

Needs: pip install paho-mqtt  (2.x)
"""

import argparse
import collections
import datetime
import json
import os
import signal
import socket
import sys
import threading
import time

import paho.mqtt.client as mqtt

import signalbox_bus as bus

VERSION = "0.1.0"
SEEN_MAX = 10_000  # envelope ids remembered for de-duplication


def clock(envelope) -> str:
    """HH:MM:SS.mmm, local time: the envelope's time, else now."""
    t = datetime.datetime.now()
    if envelope is not None:
        try:
            t = bus.parse_time(envelope["time"]).astimezone()
        except ValueError:
            pass
    return t.strftime("%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


class Listener:
    def __init__(self, args):
        self.name = args.name
        self.prefix = bus.sanitise_prefix(args.prefix)
        self.interval = args.interval
        self.show_reserved = args.reserved
        self.filters = args.filters or [f"{self.prefix}/+/#"]
        self.health_topic = f"{self.prefix}/_health/{self.name}"
        self.ping_topic = f"{self.prefix}/_ping"
        self.roster_topic = f"{self.prefix}/_roster"
        # Subscribe to _ping and _roster unless a filter already covers them
        # (overlapping subscriptions can make a broker deliver twice).
        self.subscriptions = list(self.filters) + [
            t for t in (self.ping_topic, self.roster_topic)
            if not any(mqtt.topic_matches_sub(f, t) for f in self.filters)
        ]
        self.started = bus.rfc3339_ms(bus.now_ms())
        self.lock = threading.Lock()
        self.counters = dict(received=0, processed=0, failed=0, replayed=0, duplicates=0)
        self.last_error = None
        self.seen = collections.OrderedDict()
        self.roster = []  # the latest roster received
        self.connected_at = None
        self.stop = threading.Event()

        # A stable client id and clean_session=False: the broker keeps our
        # QoS 1 messages while we are away. manual_ack: PUBACK after handling.
        self.client, self.host, self.port = bus.make_client(
            f"signalbox-listener-{self.name}", args.broker, clean_session=False, manual_ack=True)
        self.client.will_set(self.health_topic, self.report("down", "connection lost"),
                             qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self.on_connect
        self.client.on_connect_fail = self.on_connect_fail
        self.client.on_disconnect = self.on_disconnect
        self.client.on_message = self.on_message

    # -- health (PROTOCOL.md sections 7 and 9) ------------------------------
    def report(self, state, last_error=None):
        with self.lock:
            doc = {
                "listener": self.name,
                "state": state,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "version": VERSION,
                "started": self.started,
                "last_seen": bus.rfc3339_ms(bus.now_ms()),
                "interval_s": self.interval,
                "subscriptions": self.subscriptions,
                "counters": dict(self.counters),
                "last_error": last_error if last_error is not None else self.last_error,
            }
        return json.dumps(doc, separators=(",", ":"))

    def publish_health(self, state="up"):
        return self.client.publish(self.health_topic, self.report(state), qos=1, retain=True)

    def check_roster(self):
        """Add our name to the retained roster if it is missing."""
        with self.lock:
            names = list(self.roster)
        if self.name not in names:
            names = sorted(set(names) | {self.name})
            self.client.publish(self.roster_topic, json.dumps(names), qos=1, retain=True)

    # -- MQTT callbacks (paho's network thread) -------------------------------
    def on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"listener: broker refused the connection: {reason_code}", file=sys.stderr)
            return
        client.subscribe([(f, 1) for f in self.subscriptions])
        self.publish_health("up")
        self.connected_at = time.monotonic()
        print(f"listener: connected to {self.host}:{self.port} as {self.name}"
              f" (session present: {flags.session_present}), filters: {' '.join(self.filters)}",
              file=sys.stderr, flush=True)

    def on_connect_fail(self, client, userdata):
        print(f"listener: cannot reach {self.host}:{self.port}, retrying", file=sys.stderr, flush=True)

    def on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected_at = None
        if not self.stop.is_set():
            with self.lock:
                self.last_error = f"disconnected: {reason_code}"
            print(f"listener: disconnected ({reason_code}), reconnecting", file=sys.stderr, flush=True)

    def on_message(self, client, userdata, msg):
        try:
            self.handle(msg)
        except Exception as exc:  # no payload may stop the listener
            with self.lock:
                self.counters["failed"] += 1
                self.last_error = bus.summary_from(f"{type(exc).__name__}: {exc}")
            print(f"listener: error on {msg.topic}: {exc}", file=sys.stderr, flush=True)
        finally:
            client.ack(msg.mid, msg.qos)  # acknowledge only now, after handling

    def handle(self, msg):
        topic = msg.topic
        if topic == self.ping_topic:
            self.publish_health("up")
        elif topic == self.roster_topic:
            kind, names = bus.decode(msg.payload)
            with self.lock:
                self.roster = ([n for n in names if isinstance(n, str)]
                               if kind == "json" and isinstance(names, list) else [])
        if bus.reserved_name(self.prefix, topic) and not self.show_reserved:
            return  # bus housekeeping, not an event

        kind, value = bus.decode(msg.payload)
        envelope = value if kind == "envelope" else None
        with self.lock:
            self.counters["received"] += 1
            if envelope is not None:
                msg_id = envelope["id"].lower()
                if msg_id in self.seen:
                    self.counters["duplicates"] += 1
                    return
                self.seen[msg_id] = None
                if len(self.seen) > SEEN_MAX:
                    self.seen.popitem(last=False)
        retained = " [retained]" if msg.retain else ""
        print(f"{clock(envelope)} {topic} {bus.summary_line(kind, value)}{retained}", flush=True)
        with self.lock:
            self.counters["processed"] += 1

    # -- main loop ---------------------------------------------------------------
    def run(self):
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        next_health = next_roster = 0.0
        try:
            while not self.stop.wait(0.5):
                connected_at = self.connected_at
                if connected_at is None:
                    continue
                now = time.monotonic()
                if now >= next_health:
                    if next_health:  # the first report was sent by on_connect
                        self.publish_health("up")
                    next_health = now + self.interval
                # Give the retained roster a moment to arrive before the first check.
                if now >= next_roster and now - connected_at >= 2.0:
                    self.check_roster()
                    next_roster = now + self.interval
        finally:
            if self.connected_at is not None:
                info = self.publish_health("stopped")
                try:
                    info.wait_for_publish(timeout=5)
                except (RuntimeError, ValueError):
                    pass
            self.client.disconnect()  # a clean disconnect: the broker drops the will
            self.client.loop_stop()


def main() -> int:
    p = argparse.ArgumentParser(
        description="A small signalbox listener: prints messages, reports health.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    p.add_argument("filters", nargs="*", metavar="FILTER",
                   help="topic filters (default: {prefix}/+/#)")
    p.add_argument("--broker", default=os.environ.get("SIGNALBOX_BROKER", "mqtt://127.0.0.1:1883"),
                   help="broker URL (env SIGNALBOX_BROKER, default mqtt://127.0.0.1:1883)")
    p.add_argument("--name", default="py-listener",
                   help="listener name, one topic level (default py-listener)")
    p.add_argument("--prefix", default=os.environ.get("SIGNALBOX_PREFIX", "signalbox"))
    p.add_argument("--interval", type=int,
                   default=int(os.environ.get("SIGNALBOX_HEALTH_INTERVAL", "10")),
                   help="seconds between health reports (env SIGNALBOX_HEALTH_INTERVAL, default 10)")
    p.add_argument("--reserved", action="store_true",
                   help="also print messages in the reserved namespaces (_health, _failed, ...)")
    args = p.parse_args()
    if args.interval < 1:
        p.error("--interval must be at least 1")
    if bus.sanitise_level(args.name) != args.name:
        p.error(f"--name must be one sanitised topic level, e.g. {bus.sanitise_level(args.name)!r}")

    try:
        listener = Listener(args)
    except ValueError as exc:
        p.error(str(exc))

    def request_stop(signum, frame):
        listener.stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    listener.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
