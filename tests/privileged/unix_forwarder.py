#!/usr/bin/env python3
"""A same-user forwarder outside the agent, as a hostile agent would hope to
find one: whatever connects to the unix socket PATH (or sends a datagram to
PATH.dgram) is carried to 127.0.0.1:PORT. Prints "ready" on stderr once listening.

Usage: unix_forwarder.py PATH PORT"""
import os
import socket
import sys
import threading

path, port = sys.argv[1], int(sys.argv[2])
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
os.chmod(path, 0o777)
listener.listen(8)
datagrams = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
datagrams.bind(path + ".dgram")
os.chmod(path + ".dgram", 0o777)


def relay_datagrams():
    while True:
        data = datagrams.recv(65536)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as out:
            out.sendall(data)


threading.Thread(target=relay_datagrams, daemon=True).start()
print("ready", file=sys.stderr, flush=True)
while True:
    client, _ = listener.accept()
    with client, socket.create_connection(("127.0.0.1", port), timeout=5) as out:
        out.sendall(client.recv(65536))
