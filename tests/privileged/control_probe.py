"""Calls the REST control socket the way an agent trying to free itself would.

Usage: control_probe.py SOCKET [CGROUP]. With CGROUP, every socket is
created first and the probe then moves itself into CGROUP before it
connects: the kernel's unix socket filter judges a socket by the cgroup it
was created in, so this reaches the REST server, whose own check of the
caller's cgroup is then what refuses it. Prints "STATUS ERROR-CODE" for each
call (ERROR-CODE is "-" when the answer is not an error), or "refused ERRNO"
when the socket cannot even be connected to.
"""
import errno
import http.client
import os
import json
import socket
import sys


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

        self.made = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def connect(self):
        self.sock = self.made
        self.sock.settimeout(10)
        self.sock.connect(self.path)


CALLS = [
    ("GET", "/v1/status", None),
    ("PUT", "/v1/kill-switch", {"active": False, "scope": "all", "reason": "agent"}),
    ("POST", "/v1/approvals/any/approve", {"note": "self-approved"}),
    ("GET", "/v1/audit?limit=1", None),
    ("POST", "/v1/reload", None),
]

connections = [UnixConnection(sys.argv[1]) for _ in CALLS]
if len(sys.argv) > 2:
    with open(sys.argv[2] + "/cgroup.procs", "w") as procs:
        procs.write(str(os.getpid()))

for (method, path, body), connection in zip(CALLS, connections):
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    try:
        connection.request(method, path, body=data, headers=headers)
    except OSError as failure:
        print("refused", errno.errorcode.get(failure.errno, failure.errno))
        continue
    response = connection.getresponse()
    payload = response.read()
    try:
        error = json.loads(payload).get("error", "-")
    except (ValueError, AttributeError):
        error = "-"
    print(response.status, error)
    connection.close()
