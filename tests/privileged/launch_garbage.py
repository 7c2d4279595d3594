#!/usr/bin/env python3
"""Sends malformed requests to tameflared's launch socket (argv[1]), one
connection each, and prints the answer to each as "name=answer"."""
import array
import json
import os
import socket
import sys


def ask(name, payload, fds=()):
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(10)
        s.connect(sys.argv[1])
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        s.sendmsg([payload], ancillary)
        try:
            reply = s.recv(65536)
        except socket.timeout:
            reply = b"(no answer)"
        answer = json.loads(reply) if reply.startswith(b"{") else {"raw": reply.decode(errors="replace")}
        print(f"{name}={answer.get('type', '?')}: {answer.get('message', answer.get('raw', ''))}", flush=True)


stdio = [0, 1, 2, os.open(".", os.O_RDONLY)]
launch = {"type": "launch", "gateway": "one", "argv": ["/bin/true"], "env": []}
ask("not_json", b"{{{ not json")
ask("not_object", b"[1, 2, 3]")
ask("gateway_number", json.dumps(dict(launch, gateway=5)).encode(), stdio)
ask("argv_string", json.dumps(dict(launch, argv="/bin/true")).encode(), stdio)
ask("argv_numbers", json.dumps(dict(launch, argv=[1, 2])).encode(), stdio)
ask("env_object", json.dumps(dict(launch, env={"A": "B"})).encode(), stdio)
ask("no_fds", json.dumps(launch).encode())
ask("two_fds", json.dumps(launch).encode(), stdio[:2])
ask("signal_first", json.dumps({"type": "signal", "signal": "x"}).encode())
ask("unknown_type", json.dumps({"type": "reboot"}).encode())
ask("isolation_bad", json.dumps(dict(launch, isolation="none")).encode(), stdio)
ask("enforce_not_cgroup", json.dumps({"type": "enforce", "cgroup": "/etc", "gateway": "one"}).encode())
ask("enforce_type", json.dumps({"type": "enforce", "cgroup": 7, "gateway": "one"}).encode())
ask("empty", b" ")
