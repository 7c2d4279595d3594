"""Calls the REST control socket the way an agent trying to free itself would.

Usage: control_probe.py SOCKET. Prints "STATUS ERROR-CODE" for each call
(ERROR-CODE is "-" when the answer is not an error).
"""
import http.client
import json
import socket
import sys


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.path)


CALLS = [
    ("GET", "/v1/status", None),
    ("PUT", "/v1/kill-switch", {"active": False, "scope": "all", "reason": "agent"}),
    ("POST", "/v1/approvals/any/approve", {"note": "self-approved"}),
    ("GET", "/v1/audit?limit=1", None),
    ("POST", "/v1/reload", None),
]

for method, path, body in CALLS:
    connection = UnixConnection(sys.argv[1])
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    connection.request(method, path, body=data, headers=headers)
    response = connection.getresponse()
    payload = response.read()
    try:
        error = json.loads(payload).get("error", "-")
    except (ValueError, AttributeError):
        error = "-"
    print(response.status, error)
    connection.close()
