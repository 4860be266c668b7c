#!/usr/bin/env python3
"""pika_client: the AMQP 0-9-1 side of tests/tests/amqp.rs (RabbitMQ with
the MQTT plugin: MQTT topics are routing keys on the `amq.topic` exchange).

  pika_client.py check
      exit 0 when pika can be imported, 3 when it cannot.

  pika_client.py consume PORT BINDING COUNT TIMEOUT
      binds a private queue (exclusive, auto-delete) to amq.topic with the
      routing key BINDING (e.g. 'signalbox.#'), prints READY once bound,
      then one JSON line per message:
        {"routing_key", "body_b64", "delivery_mode", "headers"}
      and exits 0 after COUNT messages, 1 when TIMEOUT seconds pass first.

  pika_client.py publish PORT ROUTING_KEY BODY_FILE [DELIVERY_MODE]
      publishes the bytes of BODY_FILE to amq.topic with ROUTING_KEY
      (delivery mode 2, persistent, unless given) and waits for the
      broker's confirm; exit 0 once confirmed, 1 when it was not.

Everything on 127.0.0.1, as guest (the test node sets loopback_users none).
"""

import base64
import json
import sys
import time

EXCHANGE = "amq.topic"


def connect(port):
    import pika

    params = pika.ConnectionParameters(
        host="127.0.0.1",
        port=int(port),
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=3,
        retry_delay=1,
        socket_timeout=10,
    )
    return pika.BlockingConnection(params)


def consume(port, binding, count, timeout):
    count, deadline = int(count), time.monotonic() + float(timeout)
    conn = connect(port)
    ch = conn.channel()
    queue = ch.queue_declare(queue="", exclusive=True, auto_delete=True).method.queue
    ch.queue_bind(queue=queue, exchange=EXCHANGE, routing_key=binding)
    print("READY", flush=True)
    got = 0
    for method, props, body in ch.consume(queue, inactivity_timeout=0.2):
        if time.monotonic() > deadline:
            print(f"timed out after {got} of {count} messages", file=sys.stderr)
            return 1
        if method is None:
            continue
        ch.basic_ack(method.delivery_tag)
        headers = {}
        for k, v in (props.headers or {}).items():
            headers[k] = v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        print(
            json.dumps(
                {
                    "routing_key": method.routing_key,
                    "body_b64": base64.b64encode(body).decode("ascii"),
                    "delivery_mode": props.delivery_mode,
                    "headers": headers,
                },
                default=str,
            ),
            flush=True,
        )
        got += 1
        if got >= count:
            break
    ch.cancel()
    conn.close()
    return 0


def publish(port, routing_key, body_file, delivery_mode="2"):
    import pika

    with open(body_file, "rb") as f:
        body = f.read()
    conn = connect(port)
    ch = conn.channel()
    ch.confirm_delivery()
    try:
        ch.basic_publish(
            exchange=EXCHANGE,
            routing_key=routing_key,
            body=body,
            properties=pika.BasicProperties(delivery_mode=int(delivery_mode)),
            mandatory=False,
        )
    except pika.exceptions.NackError:
        print("the broker refused the publish (nack)", file=sys.stderr)
        return 1
    conn.close()
    return 0


def main(argv):
    if len(argv) >= 1 and argv[0] == "check":
        try:
            import pika  # noqa: F401
        except ImportError as e:
            print(f"pika is not installed: {e}", file=sys.stderr)
            return 3
        return 0
    if len(argv) == 5 and argv[0] == "consume":
        return consume(*argv[1:])
    if len(argv) in (4, 5) and argv[0] == "publish":
        return publish(*argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
