"""An HTTPS upstream that plays PyPI and the npm registry, for the proxy tests:
the real pip and the real npm install a package through the proxy from it.

usage: fake_registry.py ADDRESS CERT KEY
Listens on ADDRESS on an ephemeral port with the given PEM certificate and key
(which should name pypi.org, files.pythonhosted.org and registry.npmjs.org) and
prints "listening on PORT" to stderr, then serves until SIGTERM. Each request
is printed to stderr as "METHOD PATH host=HOST". Requests are routed by their
Host header (a port in it is ignored for routing, and reused in the links the
answers hold, so that they lead back here):

  pypi.org                GET /simple/, GET /simple/tfdemo/ (PEP 503 HTML, or
                          PEP 691 JSON when the Accept header asks for it)
  files.pythonhosted.org  GET /packages/ab/cd/tfdemo-1.0-py3-none-any.whl
  registry.npmjs.org      GET /tfdemo (packument), GET /tfdemo/-/tfdemo-1.0.0.tgz,
                          POST /-/npm/v1/security/advisories/bulk (answers {}),
                          PUT /tfdemo (a publish, answered 201)
  any host                POST /legacy/ (a PyPI upload, answered 200)

Anything else is answered 404. The wheel installs a module tfdemo and the npm
package a module tfdemo, both holding the string "installed through the proxy".
"""
import base64
import gzip
import hashlib
import http.server
import io
import json
import re
import signal
import ssl
import sys
import tarfile
import zipfile

VALUE = "installed through the proxy"
WHEEL_NAME = "tfdemo-1.0-py3-none-any.whl"
WHEEL_PATH = "/packages/ab/cd/" + WHEEL_NAME
TARBALL_PATH = "/tfdemo/-/tfdemo-1.0.0.tgz"
PYPI_JSON = "application/vnd.pypi.simple.v1+json"


def build_wheel():
    files = [
        ("tfdemo/__init__.py", ('VALUE = "%s"\n' % VALUE).encode()),
        ("tfdemo-1.0.dist-info/METADATA", b"Metadata-Version: 2.1\nName: tfdemo\nVersion: 1.0\n"),
        ("tfdemo-1.0.dist-info/WHEEL",
         b"Wheel-Version: 1.0\nGenerator: fake\nRoot-Is-Purelib: true\nTag: py3-none-any\n"),
    ]
    record = ""
    for name, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record += "%s,sha256=%s,%d\n" % (name, digest, len(data))
    record += "tfdemo-1.0.dist-info/RECORD,,\n"
    files.append(("tfdemo-1.0.dist-info/RECORD", record.encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return buffer.getvalue()


def build_tarball():
    files = [
        ("package/package.json", json.dumps({"name": "tfdemo", "version": "1.0.0", "main": "index.js"}).encode()),
        ("package/index.js", ('module.exports = "%s";\n' % VALUE).encode()),
    ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1704067200
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


WHEEL = build_wheel()
WHEEL_SHA256 = hashlib.sha256(WHEEL).hexdigest()
TARBALL = build_tarball()
TARBALL_SHA1 = hashlib.sha1(TARBALL).hexdigest()
TARBALL_INTEGRITY = "sha512-" + base64.b64encode(hashlib.sha512(TARBALL).digest()).decode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.handle_request()

    def do_HEAD(self):
        self.handle_request()

    def do_POST(self):
        self.handle_request()

    def do_PUT(self):
        self.handle_request()

    def do_DELETE(self):
        self.handle_request()

    def handle_request(self):
        host_header = self.headers.get("Host", "")
        print("%s %s host=%s" % (self.command, self.path, host_header), file=sys.stderr, flush=True)
        self.read_body()
        host, port = split_host(host_header)
        authority = lambda name: name + (":" + port if port else "")
        path = self.path.partition("?")[0]
        method = self.command

        if method == "POST" and path == "/legacy/":
            return self.answer(200, "text/plain", b"OK\n")
        if host == "pypi.org" and method in ("GET", "HEAD"):
            wants_json = PYPI_JSON in self.headers.get("Accept", "")
            if path in ("/simple", "/simple/"):
                if wants_json:
                    body = {"meta": {"api-version": "1.0"}, "projects": [{"name": "tfdemo"}]}
                    return self.answer(200, PYPI_JSON, json.dumps(body).encode())
                html = ('<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
                        '<title>Simple index</title></head><body>\n<a href="/simple/tfdemo/">tfdemo</a>\n'
                        '</body></html>\n')
                return self.answer(200, "text/html", html.encode())
            match = re.fullmatch(r"/simple/([^/]+)/?", path)
            if match and re.sub(r"[-_.]+", "-", match.group(1)).lower() == "tfdemo":
                url = "https://%s%s" % (authority("files.pythonhosted.org"), WHEEL_PATH)
                if wants_json:
                    body = {"meta": {"api-version": "1.0"}, "name": "tfdemo",
                            "files": [{"filename": WHEEL_NAME, "url": url, "hashes": {"sha256": WHEEL_SHA256}}]}
                    return self.answer(200, PYPI_JSON, json.dumps(body).encode())
                html = ('<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
                        '<title>Links for tfdemo</title></head><body>\n<h1>Links for tfdemo</h1>\n'
                        '<a href="%s#sha256=%s">%s</a><br/>\n</body></html>\n' % (url, WHEEL_SHA256, WHEEL_NAME))
                return self.answer(200, "text/html", html.encode())
        if host == "files.pythonhosted.org" and method in ("GET", "HEAD") and path == WHEEL_PATH:
            return self.answer(200, "application/octet-stream", WHEEL)
        if host == "registry.npmjs.org":
            if method in ("GET", "HEAD") and path == "/tfdemo":
                tarball = "https://%s%s" % (authority("registry.npmjs.org"), TARBALL_PATH)
                version = {"name": "tfdemo", "version": "1.0.0", "main": "index.js",
                           "dist": {"tarball": tarball, "shasum": TARBALL_SHA1, "integrity": TARBALL_INTEGRITY}}
                body = {"_id": "tfdemo", "name": "tfdemo", "dist-tags": {"latest": "1.0.0"},
                        "versions": {"1.0.0": version}}
                return self.answer(200, "application/json", json.dumps(body).encode())
            if method in ("GET", "HEAD") and path == TARBALL_PATH:
                return self.answer(200, "application/octet-stream", TARBALL)
            if method == "POST" and path == "/-/npm/v1/security/advisories/bulk":
                return self.answer(200, "application/json", b"{}")
            if method == "PUT" and path == "/tfdemo":
                return self.answer(201, "application/json", b'{"ok":true}')
        self.answer(404, "text/plain", b"Not Found\n")

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def answer(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args):
        pass


def split_host(value):
    """"pypi.org:8443" -> ("pypi.org", "8443"); "pypi.org" -> ("pypi.org", "")."""
    host, _, port = value.strip().lower().rpartition(":")
    if not host or not port.isdigit() or host.endswith(":"):
        return value.strip().lower().rstrip("."), ""
    return host.rstrip("."), port


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's thread, so that a
        # client that stalls or refuses the certificate does not hold up the
        # accept loop.
        request.settimeout(60)
        try:
            connection = context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(connection, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            connection.close()


def terminate(signum, frame):
    raise SystemExit(0)


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
server = Server((sys.argv[1], 0), Handler)
signal.signal(signal.SIGTERM, terminate)
print("listening on %d" % server.server_address[1], file=sys.stderr, flush=True)
try:
    server.serve_forever()
finally:
    server.server_close()
