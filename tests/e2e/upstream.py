#!/usr/bin/python3
"""The fake upstream of the end-to-end test, run inside the container.

Answers every request with 200 and appends one JSON line per request to LOG:
the peer, method, path, Host, Authorization and X-E2E-Probe headers. The test
reads the log to tell requests the proxy forwarded (they carry the credential
the daemon injected) from ones that escaped (they do not, or they are marked
as bypass attempts and must never arrive at all).

usage: upstream.py ADDRESS PORT LOG [CERT KEY]
With CERT and KEY (PEM files) it serves HTTPS: the proxy verifies it against
the test CA the daemon's upstream_ca_file names.
"""
import http.server
import json
import ssl
import sys
import threading

ADDRESS, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]
CERT, KEY = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        record = {
            "peer": self.client_address[0],
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "auth": self.headers.get("Authorization"),
            "probe": self.headers.get("X-E2E-Probe"),
        }
        with LOCK, open(LOG, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        body = b"upstream ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


server = Server((ADDRESS, PORT), Handler)
if CERT:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERT, KEY)
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
