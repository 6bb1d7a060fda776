#!/usr/bin/env python3
"""One HTTP/2 cleartext (prior knowledge) POST with request trailers, for the e2e suite:
    h2c_post.py HOST PORT PATH BODY_FILE
Sends the headers, the body as DATA, then a trailers HEADERS frame ending the stream, and prints
the response as `STATUS\\n` followed by the body. Uses the pinned `h2` package in .venv (scripts/setup)."""

import socket
import sys

import h2.config
import h2.connection
import h2.events


def main():
    host, port, path, body_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    with open(body_file, "rb") as f:
        body = f.read()
    sock = socket.create_connection((host, port), timeout=20)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(stream, [
        (":method", "POST"), (":scheme", "http"), (":authority", f"{host}:{port}"), (":path", path),
        ("content-type", "text/xml; charset=utf-8"), ("soapaction", '""'),
    ])
    conn.send_data(stream, body)
    conn.send_headers(stream, [("x-checksum", "1")], end_stream=True)
    sock.sendall(conn.data_to_send())
    status, reply, done = None, b"", False
    while not done:
        data = sock.recv(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(b":status", b"?").decode()
            elif isinstance(event, h2.events.DataReceived):
                reply += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                done = True
        sock.sendall(conn.data_to_send())
    sock.close()
    sys.stdout.write(f"{status}\n")
    sys.stdout.write(reply.decode("utf-8", "replace"))


if __name__ == "__main__":
    main()
