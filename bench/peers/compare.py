#!/usr/bin/env python3
"""tameflared side by side with Squid (ssl_bump), mitmproxy and tinyproxy.

Run through `./build.sh bench-peers` (it installs the peers and builds the
Release binaries first); see docs/performance.md. Every system gets the same
loopback upstream (nginx on 127.0.0.2: HTTP on 8080, HTTPS on 8443, a
128-byte and a 1 MiB response), an allow rule for the test host, TLS
interception where it can do it, and a per-request log. The same load
generator (bench/peers/loadgen.cpp, `tf_loadgen`) drives every system, one
at a time, in rounds that visit the scenarios and systems in a shuffled
order, so the machine's drift affects all alike.

CPU: every proxy runs on CPU 1 (taskset), the load generator and the
upstream on CPU 0: a proxy under test has one core to itself.

Output: a table on stdout, results.json and results.png in --out.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "api.bench.test"  # intercepted / allowed host
TUNNEL_HOST = "tunnel.bench.test"  # tunnelled without interception
UPSTREAM_ADDR = "127.0.0.2"
HTTP_PORT = 8080
HTTPS_PORT = 8443
SMALL_BYTES = 128
LARGE_BYTES = 1 << 20
PROXY_CPU = "1"
CLIENT_CPU = "0"
GATEWAY = "bench"
GATEWAY_1000 = "bench1000"
TOKEN = "bench-token"
NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # the hard limit: what root may raise to here
IDLE_PORT = 8081  # the upstream closes after each response: idle runs hold client connections only
HERE = Path(__file__).resolve().parent

SYSTEMS = ["tameflared", "squid", "mitmproxy", "tinyproxy"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    print(f"compare.py: {message}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------
# Processes: each system runs in its own cgroup (no controllers needed: the
# cgroup only lists its processes) so CPU time and memory cover all of them.


def cgroup2_mount() -> Path:
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return Path(left.split()[4])
    fail("no cgroup2 mount in /proc/self/mountinfo")
    raise AssertionError


def raise_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))  # soft up to the hard limit


class Service:
    """A long-running process in its own cgroup, pinned to one CPU."""

    def __init__(self, name: str, argv: list[str], work: Path, cgroup: Path, cpu: str,
                 env: dict[str, str] | None = None):
        self.name = name
        self.cgroup = cgroup
        self.cgroup.mkdir(parents=True, exist_ok=True)
        self.log_path = work / f"{name}.log"
        procs = str(cgroup / "cgroup.procs")

        def enter() -> None:
            raise_nofile()
            with open(procs, "w") as f:
                f.write("0")
            os.setsid()

        self.process = subprocess.Popen(["taskset", "-c", cpu] + argv, stdin=subprocess.DEVNULL,
                                        stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                        preexec_fn=enter, env=env)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.cgroup / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return []

    def cpu_seconds(self) -> float:
        ticks = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
        return ticks / os.sysconf("SC_CLK_TCK")

    def pss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for pid in self.pids():  # helpers that left the process group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + 5
        while self.pids() and time.time() < deadline:
            time.sleep(0.05)
        try:
            self.cgroup.rmdir()
        except OSError:
            pass

    def tail(self) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(True)[-20:])
        except FileNotFoundError:
            return ""


def wait_for_port(address: str, port: int, service: Service, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not service.alive():
            fail(f"{service.name} exited at start; its log ({service.log_path}) ends:\n{service.tail()}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((address, port)) == 0:
                return
        time.sleep(0.1)
    fail(f"{service.name} does not listen on {address}:{port} after {timeout:.0f} s; its log ends:\n{service.tail()}")


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kwargs)


# --------------------------------------------------------------------------
# Certificates (the openssl command line)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", f"/CN={name}",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return key, cert


def make_leaf(directory: Path, ca_key: Path, ca_cert: Path) -> tuple[Path, Path]:
    key, csr, cert = directory / "upstream.key", directory / "upstream.csr", directory / "upstream.crt"
    run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
         "-out", str(csr), "-subj", f"/CN={HOST}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    extensions = directory / "leaf.ext"
    extensions.write_text(f"subjectAltName=DNS:{HOST},DNS:{TUNNEL_HOST},IP:{UPSTREAM_ADDR}\n"
                          "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
         "-out", str(cert), "-days", "30", "-extfile", str(extensions)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return key, cert


# --------------------------------------------------------------------------
# The systems. Each `start` returns the Service and fills in where it listens.


@dataclass
class System:
    name: str
    version: str = ""
    services: list[Service] = field(default_factory=list)
    http_proxy: tuple[str, int] | None = None  # explicit proxy, plain HTTP and CONNECT
    https_proxy: tuple[str, int] | None = None  # explicit proxy that intercepts CONNECT
    tunnel_proxy: tuple[str, int] | None = None  # explicit proxy that tunnels CONNECT to TUNNEL_HOST
    rules1000_proxy: tuple[str, int] | None = None  # the same with 1,000 rules
    proxy_auth: str = ""  # user:pass for Proxy-Authorization
    rules1000_auth: str = ""
    intercept_ca: Path | None = None  # what a client must trust for intercepted HTTPS
    transparent: bool = False  # tameflared: tf run puts the load generator under BPF redirection
    intercept_ports: dict[str, int] = field(default_factory=dict)  # squid: scheme -> port iptables REDIRECTs to
    notes: list[str] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds() for s in self.services)

    def pss_bytes(self) -> int:
        return sum(s.pss_bytes() for s in self.services)

    def stop(self) -> None:
        for service in self.services:
            service.stop()


def version_of(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        match = re.search(pattern, out.stdout + out.stderr)
        return match.group(1) if match else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def deny_names(count: int) -> list[str]:
    return [f"d{i}.denied.example" for i in range(count)]


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="tf-peers-"))
        os.chmod(self.work, 0o755)
        self.cgroup_root = cgroup2_mount() / f"tf-peers-{os.getpid()}"
        self.cgroup_root.mkdir()
        self.build = Path(args.build).resolve()
        self.loadgen = self.build / "bench" / "tf_loadgen"
        self.systems: dict[str, System] = {}
        self.upstream: Service | None = None
        self.bpf_pins = Path(f"/sys/fs/bpf/tf-peers-{os.getpid()}")
        self.agents_cgroup = cgroup2_mount() / f"tf-peers-agents-{os.getpid()}"

    def fresh_directory(self, name: str) -> Path:
        """An empty work directory for one instance (a restart starts afresh)."""
        directory = self.work / name
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
        return directory

    def service(self, name: str, argv: list[str], cpu: str = PROXY_CPU, env: dict[str, str] | None = None) -> Service:
        return Service(name, argv, self.work, self.cgroup_root / name, cpu, env)

    # -- the upstream -------------------------------------------------------
    def start_upstream(self) -> None:
        certs = self.work / "certs"
        certs.mkdir()
        self.upstream_ca_key, self.upstream_ca = make_ca(certs, "upstream-ca")
        key, cert = make_leaf(certs, self.upstream_ca_key, self.upstream_ca)
        www = self.work / "www"
        www.mkdir()
        (www / "small").write_bytes(b"s" * SMALL_BYTES)
        (www / "large").write_bytes(os.urandom(LARGE_BYTES))
        conf = self.work / "nginx.conf"
        conf.write_text(f"""
worker_processes 1;
worker_rlimit_nofile {NOFILE};
daemon off;
pid {self.work}/nginx.pid;
error_log {self.work}/nginx-error.log warn;
events {{ worker_connections 40000; }}
http {{
    access_log off;
    sendfile on;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    default_type application/octet-stream;
    ssl_session_cache off;
    ssl_session_tickets off;
    server {{
        listen {UPSTREAM_ADDR}:{HTTP_PORT} backlog=4096 reuseport;
        listen {UPSTREAM_ADDR}:{HTTPS_PORT} ssl backlog=4096 reuseport;
        server_name {HOST} {TUNNEL_HOST};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {www};
    }}
    server {{
        listen {UPSTREAM_ADDR}:{IDLE_PORT} backlog=4096 reuseport;
        keepalive_timeout 0;
        root {www};
    }}
}}
""")
        self.upstream = Service("nginx", ["nginx", "-c", str(conf)], self.work, self.cgroup_root / "nginx", CLIENT_CPU)
        wait_for_port(UPSTREAM_ADDR, HTTP_PORT, self.upstream)
        wait_for_port(UPSTREAM_ADDR, HTTPS_PORT, self.upstream)

    # -- tameflared ---------------------------------------------------------
    def start_tameflared(self) -> System:
        system = System("tameflared")
        root = self.work / "tameflared"
        shutil.rmtree(root, ignore_errors=True)  # a restart starts afresh
        (root / "connectors").mkdir(parents=True)
        (root / "gateways").mkdir()
        # One connector for the bench host: GET /{object} is bench.{object}.get.
        (root / "connectors" / "bench.json").write_text(json.dumps({
            "name": "bench", "description": "the benchmark's upstream", "domains": [HOST],
            "routes": [{"method": "GET", "path": "/{object}", "action": "bench.{object}.get"}]}))
        token_hash = hashlib.sha256(TOKEN.encode()).hexdigest()

        def gateway(name: str, rules: list[dict]) -> dict:
            return {"name": name, "enforcement": "full", "rate_limit": {"requests": 0},
                    "proxy_token_sha256": token_hash,
                    "tcp": [{"host": TUNNEL_HOST, "port": HTTPS_PORT}],
                    "connectors": {"bench": {"rules": rules}}}

        allow = {"action": "bench.*", "decision": "allow"}
        (root / "gateways" / "bench.json").write_text(json.dumps(gateway(GATEWAY, [allow])))
        rules = [{"action": f"bench.obj{i}.get", "decision": "deny"} for i in range(999)] + [allow]
        (root / "gateways" / "bench1000.json").write_text(json.dumps(gateway(GATEWAY_1000, rules)))
        config = {
            "connector_dirs": [str(root / "connectors")],
            "gateways_dir": str(root / "gateways"),
            "state_dir": str(root / "state"),
            "runtime_dir": str(root / "run"),
            "proxy": {"explicit_listen": "127.0.0.1:15080", "transparent_listen": "127.0.0.1:15001",
                      "threads": 1, "allowed_upstreams": ["127.0.0.0/8"],
                      "upstream_ca_file": str(self.upstream_ca),
                      "hosts": {HOST: [UPSTREAM_ADDR], TUNNEL_HOST: [UPSTREAM_ADDR]},
                      "system_resolver": False},
            "agents": {"enabled": not self.args.no_transparent, "cgroup_root": str(self.agents_cgroup),
                       "bpf_pin_dir": str(self.bpf_pins), "isolation": "cgroup"},
            "dbus": {"enabled": False},
        }
        (root / "tameflared.json").write_text(json.dumps(config, indent=2))
        self.tf_config = root / "tameflared.json"
        daemon = self.build / "daemon" / "tameflared"
        # The default log level: a line per request in its log, as the peers' access logs.
        service = self.service("tameflared", [str(daemon), "-c", str(self.tf_config)])
        system.services.append(service)
        wait_for_port("127.0.0.1", 15080, service)
        deadline = time.time() + 30
        while not (root / "state" / "ca" / "ca.crt").exists() and time.time() < deadline:
            time.sleep(0.1)
        # Agents cannot see the daemon's state directory: the CA certificate
        # they trust is a copy (as <runtime_dir>/ca-bundle.pem is).
        shutil.copy(root / "state" / "ca" / "ca.crt", self.work / "certs" / "tameflared-ca.crt")
        system.version = version_of([str(daemon), "--version"], r"(\d+\.\d+[^\s]*)")
        system.http_proxy = system.https_proxy = system.tunnel_proxy = ("127.0.0.1", 15080)
        system.rules1000_proxy = ("127.0.0.1", 15080)
        system.proxy_auth = f"{GATEWAY}:{TOKEN}"
        system.rules1000_auth = f"{GATEWAY_1000}:{TOKEN}"
        system.intercept_ca = self.work / "certs" / "tameflared-ca.crt"
        system.transparent = not self.args.no_transparent
        system.notes.append("1 proxy thread; traffic log and audit chain in SQLite (synchronous=normal, the "
                            "default): each request is committed before it is forwarded; a log line per request")
        return system

    # -- Squid --------------------------------------------------------------
    def squid_conf(self, name: str, port: int, rules: int, certs: Path, intercept: bool) -> Path:
        directory = self.fresh_directory(name)
        shutil.chown(directory, "proxy", "proxy")
        db = directory / "ssl_db"
        run(["/usr/lib/squid/security_file_certgen", "-c", "-s", str(db), "-M", "16MB"], stdout=subprocess.DEVNULL)
        run(["chown", "-R", "proxy:proxy", str(db)])
        hosts = directory / "hosts"
        hosts.write_text(f"{UPSTREAM_ADDR} {HOST} {TUNNEL_HOST}\n")
        bump = (f"generate-host-certificates=on dynamic_cert_mem_cache_size=16MB tls-cert={certs}/squid-ca.crt "
                f"tls-key={certs}/squid-ca.key")
        deny = "".join(f"acl r{i} dstdomain {d}\nhttp_access deny r{i}\n"
                       for i, d in enumerate(deny_names(rules - 1))) if rules > 1 else ""
        conf = directory / "squid.conf"
        conf.write_text(f"""
workers 1
pid_filename {directory}/squid.pid
cache_log {directory}/cache.log
access_log stdio:{directory}/access.log squid
cache deny all
cache_mem 8 MB
memory_pools off
max_filedescriptors {NOFILE}
hosts_file {hosts}
dns_nameservers 127.0.0.1
coredump_dir {directory}
shutdown_lifetime 1 seconds
client_idle_pconn_timeout 10 minutes
http_port 127.0.0.1:{port} ssl-bump {bump}
{f"http_port 127.0.0.1:{port + 1} intercept" if intercept else ""}
{f"https_port 127.0.0.1:{port + 2} intercept ssl-bump {bump}" if intercept else ""}
sslcrtd_program /usr/lib/squid/security_file_certgen -s {db} -M 16MB
sslcrtd_children 4 startup=1 idle=1
tls_outgoing_options cafile={self.upstream_ca}
acl tunnel ssl::server_name {TUNNEL_HOST}
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump splice tunnel
ssl_bump bump all
acl bench dstdomain {HOST} {TUNNEL_HOST}
acl bench_ports port {HTTP_PORT} {HTTPS_PORT} {IDLE_PORT}
acl CONNECT method CONNECT
{deny}http_access allow bench bench_ports
http_access deny all
""")
        run(["chown", "-R", "proxy:proxy", str(directory)])
        return conf

    def start_squid(self) -> System:
        system = System("squid")
        certs = self.work / "certs"
        make_ca(certs, "squid-ca")
        os.chmod(certs / "squid-ca.key", 0o644)
        intercept = not self.args.no_transparent and shutil.which("iptables") is not None
        if not self.args.no_transparent and not intercept:
            log("iptables is not installed: Squid is left out of the transparent scenarios")
        for name, port, rules in (("squid", 13128, 1), ("squid-1000", 13228, 1000)):
            conf = self.squid_conf(name, port, rules, certs, intercept and rules == 1)
            check = subprocess.run(["squid", "-k", "parse", "-f", str(conf)], capture_output=True, text=True)
            if check.returncode != 0:
                fail(f"squid refuses {conf}:\n{check.stderr[-2000:]}")
            service = self.service(name, ["squid", "-N", "-f", str(conf)])
            system.services.append(service)
            wait_for_port("127.0.0.1", port, service)
        system.version = version_of(["squid", "-v"], r"Version (\S+)")
        system.http_proxy = system.https_proxy = system.tunnel_proxy = ("127.0.0.1", 13128)
        system.rules1000_proxy = ("127.0.0.1", 13228)
        system.intercept_ca = certs / "squid-ca.crt"
        if intercept:
            system.intercept_ports = {"http": 13129, "https": 13130}
            system.notes.append("transparent: iptables nat OUTPUT REDIRECT of the load generator's cgroup "
                                "(xt_cgroup) to `http_port intercept` / `https_port intercept ssl-bump`")
        system.notes.append("squid-openssl, 1 worker, ssl_bump (peek, then bump; splice for the tunnel host), "
                            "cache off, access.log")
        return system

    # -- mitmproxy ----------------------------------------------------------
    def start_mitmproxy(self) -> System:
        system = System("mitmproxy")
        for name, port, rules in (("mitmproxy", 18080, 1), ("mitmproxy-1000", 18180, 1000)):
            directory = self.fresh_directory(name)
            addon = directory / "allow.py"
            patterns = [re.escape(d) for d in deny_names(rules - 1)]
            addon.write_text(f"""
import re
from mitmproxy import http
DENY = [re.compile(p) for p in {patterns!r}]
ALLOW = re.compile({"^(" + re.escape(HOST) + "|" + re.escape(TUNNEL_HOST) + ")$"!r})

def deny(host):
    return any(p.fullmatch(host) for p in DENY) or not ALLOW.match(host)

def http_connect(flow: http.HTTPFlow) -> None:
    if deny(flow.request.host):
        flow.response = http.Response.make(403, b"denied")

def request(flow: http.HTTPFlow) -> None:
    if deny(flow.request.host):
        flow.response = http.Response.make(403, b"denied")
""")
            hosts_ignore = "^" + re.escape(TUNNEL_HOST) + "(:[0-9]+)?$"
            argv = ["mitmdump", "--listen-host", "127.0.0.1", "--listen-port", str(port),
                    "--set", f"confdir={directory}", "--set", f"ssl_verify_upstream_trusted_ca={self.upstream_ca}",
                    "--ignore-hosts", hosts_ignore, "--set", "flow_detail=1", "--set", "stream_large_bodies=256k",
                    "-s", str(addon)]
            # mitmdump resolves through the system resolver; the harness's
            # private /etc/hosts names the upstream.
            service = self.service(name, argv)
            system.services.append(service)
            wait_for_port("127.0.0.1", port, service)
            if name == "mitmproxy":
                system.intercept_ca = directory / "mitmproxy-ca-cert.pem"
        system.version = version_of(["mitmdump", "--version"], r"Mitmproxy: (\S+)")
        system.http_proxy = system.https_proxy = system.tunnel_proxy = ("127.0.0.1", 18080)
        system.rules1000_proxy = ("127.0.0.1", 18180)
        system.notes.append("mitmdump, an addon with the allow rule, flow_detail=1 log, ignore_hosts for the "
                            "tunnel host, stream_large_bodies=256k")
        return system

    # -- tinyproxy ----------------------------------------------------------
    def start_tinyproxy(self) -> System:
        system = System("tinyproxy")
        for name, port, rules in (("tinyproxy", 18888, 1), ("tinyproxy-1000", 18988, 1000)):
            directory = self.fresh_directory(name)
            shutil.chown(directory, "nobody", "nogroup")
            allowed = [re.escape(d) for d in deny_names(rules - 1)] + [
                "^" + re.escape(HOST) + "$", "^" + re.escape(TUNNEL_HOST) + "$"]
            (directory / "filter").write_text("\n".join(allowed) + "\n")
            conf = directory / "tinyproxy.conf"
            conf.write_text(f"""
User nobody
Group nogroup
Port {port}
Listen 127.0.0.1
Timeout 600
MaxClients 30000
LogFile "{directory}/tinyproxy.log"
LogLevel Info
PidFile "{directory}/tinyproxy.pid"
Allow 127.0.0.1
ViaProxyName "tinyproxy"
DisableViaHeader Yes
Filter "{directory}/filter"
FilterExtended Yes
FilterDefaultDeny Yes
ConnectPort {HTTPS_PORT}
""")
            service = self.service(name, ["tinyproxy", "-d", "-c", str(conf)])
            system.services.append(service)
            wait_for_port("127.0.0.1", port, service)
        system.version = version_of(["tinyproxy", "-v"], r"tinyproxy (\S+)")
        system.http_proxy = system.tunnel_proxy = ("127.0.0.1", 18888)
        system.rules1000_proxy = ("127.0.0.1", 18988)
        system.notes.append("no TLS interception (CONNECT is always a tunnel); filter file (regular "
                            "expressions, default deny), LogLevel Info")
        return system

    def start(self, name: str) -> None:
        starters = {"tameflared": self.start_tameflared, "squid": self.start_squid,
                    "mitmproxy": self.start_mitmproxy, "tinyproxy": self.start_tinyproxy}
        log(f"starting {name}")
        self.systems[name] = starters[name]()

    def restart(self, name: str) -> System:
        self.systems[name].stop()
        self.start(name)
        return self.systems[name]

    def start_all(self) -> None:
        self.start_upstream()
        for name in self.args.systems:
            self.start(name)

    def cleanup(self) -> None:
        for system in self.systems.values():
            system.stop()
        if self.upstream:
            self.upstream.stop()
        for path in (self.agents_cgroup,):
            if path.exists():
                for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if child.is_dir():
                        try:
                            child.rmdir()
                        except OSError:
                            pass
                try:
                    path.rmdir()
                except OSError:
                    pass
        shutil.rmtree(self.bpf_pins, ignore_errors=True)
        try:
            for child in self.cgroup_root.iterdir():
                if child.is_dir():
                    child.rmdir()
            self.cgroup_root.rmdir()
        except OSError:
            pass
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


# --------------------------------------------------------------------------
# Scenarios


@dataclass
class Scenario:
    name: str
    title: str
    scheme: str  # http | https
    path: str  # /small | /large
    connections: int
    new_connection: bool = False
    kind: str = "https_proxy"  # http_proxy | https_proxy | tunnel_proxy | rules1000_proxy | transparent | idle
    host: str = HOST
    systems: list[str] | None = None  # None: every system that has the kind

    @property
    def expect(self) -> int:
        return LARGE_BYTES if self.path == "/large" else SMALL_BYTES

    def url(self) -> str:
        port = HTTPS_PORT if self.scheme == "https" else HTTP_PORT
        return f"{self.scheme}://{self.host}:{port}{self.path}"


SCENARIOS = [
    Scenario("http-1", "HTTP keep-alive, 1 connection", "http", "/small", 1, kind="http_proxy"),
    Scenario("http-32", "HTTP keep-alive, 32 connections", "http", "/small", 32, kind="http_proxy"),
    Scenario("http-32-rules1000", "HTTP keep-alive, 32 connections, 1,000 rules", "http", "/small", 32,
             kind="rules1000_proxy"),
    Scenario("https-1", "HTTPS intercepted, keep-alive, 1 connection", "https", "/small", 1),
    Scenario("https-32", "HTTPS intercepted, keep-alive, 32 connections", "https", "/small", 32),
    Scenario("https-new-8", "HTTPS intercepted, new connection per request, 8 connections", "https", "/small", 8,
             new_connection=True),
    Scenario("tunnel-32", "HTTPS CONNECT tunnel (no interception), keep-alive, 32 connections", "https", "/small",
             32, kind="tunnel_proxy", host=TUNNEL_HOST),
    Scenario("http-1mib-4", "HTTP 1 MiB responses, 4 connections", "http", "/large", 4, kind="http_proxy"),
    Scenario("https-1mib-4", "HTTPS intercepted, 1 MiB responses, 4 connections", "https", "/large", 4),
    Scenario("transparent-http-32", "transparent HTTP, 32 connections (tameflared: BPF; Squid: iptables)",
             "http", "/small", 32, kind="transparent"),
    Scenario("transparent-https-32", "transparent HTTPS intercepted, 32 connections (tameflared: BPF; Squid: "
             "iptables)", "https", "/small", 32, kind="transparent"),
]
IDLE_COUNTS = [1000, 10000]


class Runner:
    def __init__(self, bench: Bench, args: argparse.Namespace):
        self.bench = bench
        self.args = args
        self.results: list[dict] = []

    def loadgen_argv(self, scenario: Scenario, system: System | None) -> list[str]:
        argv = [str(self.bench.loadgen), "--url", scenario.url(), "--connections", str(scenario.connections),
                "--duration", str(self.args.duration), "--warmup", str(self.args.warmup),
                "--expect-bytes", str(scenario.expect)]
        if scenario.new_connection:
            argv.append("--new-connection")
        if system is None or scenario.kind == "transparent":
            argv += ["--mode", "direct", "--connect-to", UPSTREAM_ADDR]
            ca = self.bench.upstream_ca
            if system is not None and scenario.scheme == "https":
                ca = system.intercept_ca
            argv += ["--ca", str(ca)]
            return argv
        proxy = getattr(system, scenario.kind)
        argv += ["--mode", "proxy", "--proxy", f"{proxy[0]}:{proxy[1]}"]
        auth = system.rules1000_auth if scenario.kind == "rules1000_proxy" else system.proxy_auth
        if auth:
            argv += ["--proxy-auth", auth]
        intercepted = scenario.scheme == "https" and scenario.kind != "tunnel_proxy"
        argv += ["--ca", str(system.intercept_ca if intercepted else self.bench.upstream_ca)]
        return argv

    def applies(self, scenario: Scenario, system: System) -> bool:
        if scenario.kind == "transparent":
            return system.transparent or scenario.scheme in system.intercept_ports
        if scenario.kind == "https_proxy" or (scenario.kind == "rules1000_proxy" and scenario.scheme == "https"):
            return system.https_proxy is not None and system.intercept_ca is not None
        return getattr(system, scenario.kind) is not None

    def measure(self, scenario: Scenario, system: System | None, round_: int) -> None:
        argv = self.loadgen_argv(scenario, system)
        enter = raise_nofile
        redirect: list[str] = []
        if system is not None and scenario.kind == "transparent" and system.transparent:
            tf = self.bench.build / "cli" / "tf"
            argv = [str(tf), "run", "-c", str(self.bench.tf_config), "--gateway", GATEWAY, "--isolation", "cgroup",
                    "--", "taskset", "-c", CLIENT_CPU] + argv
        elif system is not None and scenario.kind == "transparent":
            # The load generator runs in a cgroup of its own whose connections
            # to the upstream iptables redirects to the peer's intercept port.
            client = self.bench.cgroup_root / "client"
            client.mkdir(exist_ok=True)
            relative = "/" + str(client.relative_to(cgroup2_mount()))
            port = HTTPS_PORT if scenario.scheme == "https" else HTTP_PORT
            redirect = ["OUTPUT", "-p", "tcp", "-d", UPSTREAM_ADDR, "--dport", str(port), "-m", "cgroup",
                        "--path", relative, "-m", "comment", "--comment", "tf-peers", "-j", "REDIRECT",
                        "--to-ports", str(system.intercept_ports[scenario.scheme])]
            run(["iptables", "-t", "nat", "-A"] + redirect)

            def enter() -> None:
                raise_nofile()
                with open(client / "cgroup.procs", "w") as f:
                    f.write("0")

            argv = ["taskset", "-c", CLIENT_CPU] + argv
        else:
            argv = ["taskset", "-c", CLIENT_CPU] + argv
        name = system.name if system else "direct"
        pss_peak = [system.pss_bytes() if system else 0]
        cpu_marks: list[float] = []  # the system's CPU seconds when the window opens and closes
        stop = threading.Event()
        window_opens = time.monotonic() + self.args.warmup
        window_closes = window_opens + self.args.duration

        def sample() -> None:
            while not stop.wait(0.25):
                pss_peak[0] = max(pss_peak[0], system.pss_bytes())

        def mark_window() -> None:  # the system's CPU time when the measured window opens and closes
            for moment in (window_opens, window_closes):
                time.sleep(max(0.0, moment - time.monotonic()))
                cpu_marks.append(system.cpu_seconds())

        threads = [threading.Thread(target=sample), threading.Thread(target=mark_window)] if system else []
        for thread in threads:
            thread.start()
        started = time.time()
        try:
            out = subprocess.run(argv, capture_output=True, text=True, preexec_fn=enter,
                                 timeout=self.args.warmup + self.args.duration + 120)
        finally:
            stop.set()
            if redirect:
                run(["iptables", "-t", "nat", "-D"] + redirect)
            for thread in threads:
                thread.join()
        elapsed = time.time() - started
        result = {"scenario": scenario.name, "system": name, "round": round_}
        try:
            report = json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            result["error"] = f"load generator failed (exit {out.returncode}): {out.stderr.strip()[-600:]}"
            log(f"  {scenario.name:22} {name:11} FAILED: {result['error']}")
            self.results.append(result)
            return
        if not report.get("requests") or report.get("latency_us", {}).get("p50") is None:
            result["error"] = f"no successful request: errors {report.get('errors')}; {out.stderr.strip()[-600:]}"
            log(f"  {scenario.name:22} {name:11} FAILED: {result['error']}")
            self.results.append(result)
            return
        result.update({
            "rps": report["rps"], "bytes_per_s": report.get("bytes_per_s", 0),
            "p50_us": report["latency_us"]["p50"], "p99_us": report["latency_us"]["p99"],
            "errors": sum(report.get("errors", {}).values()), "requests": report.get("requests", 0),
            "window_s": report.get("window_s", 0), "wall_s": elapsed,
        })
        if system and len(cpu_marks) == 2:
            # The system's CPU time over the measured window, per request of the window.
            cpu = cpu_marks[1] - cpu_marks[0]
            result["cpu_s_per_10k"] = cpu / max(report.get("requests", 0), 1) * 10000
            result["cpu_utilization"] = cpu / self.args.duration
        if system:
            result["peak_pss_mib"] = pss_peak[0] / 2**20
        log(f"  {scenario.name:22} {name:11} {report['rps']:>10.0f} req/s  p50 {result['p50_us']:>8.0f} µs  "
            f"p99 {result['p99_us']:>8.0f} µs  errors {result['errors']}")
        self.results.append(result)

    def measure_idle(self, count: int, system: System, round_: int) -> None:
        # A fresh process: memory that earlier runs freed (and the allocator
        # kept) would otherwise hold the new connections unseen.
        system = self.bench.restart(system.name)
        proxy = system.http_proxy
        argv = ["taskset", "-c", CLIENT_CPU, str(self.bench.loadgen), "--mode", "idle",
                "--url", f"http://{HOST}:{IDLE_PORT}/small", "--proxy", f"{proxy[0]}:{proxy[1]}",
                "--connections", str(count), "--hold", "600", "--expect-bytes", str(SMALL_BYTES)]
        if system.proxy_auth:
            argv += ["--proxy-auth", system.proxy_auth]
        time.sleep(1)
        before = system.pss_bytes()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=raise_nofile)
        result = {"scenario": f"idle-{count}", "system": system.name, "round": round_}
        try:
            line = process.stdout.readline()
            ready = json.loads(line) if line else {}
            if ready.get("event") != "ready":
                raise ValueError(f"no ready line: {line!r} {process.stderr.read()[-600:]}")
            time.sleep(2)
            after = system.pss_bytes()
            held = ready["connections"] - ready.get("failed", 0) - ready.get("dropped", 0)
            result.update({"connections": ready["connections"], "failed": ready.get("failed", 0),
                           "held": held, "pss_before_mib": before / 2**20, "pss_after_mib": after / 2**20})
            if held >= 0.9 * count:
                result["kib_per_connection"] = (after - before) / 1024 / held
            else:  # it closes idle keep-alive connections: nothing to divide by
                result["closes_idle"] = True
            figure = (f"{result['kib_per_connection']:>8.1f} KiB per connection" if "kib_per_connection" in result
                      else "closes idle connections")
            log(f"  idle-{count:<17} {system.name:11} {figure} ({held} held, {ready.get('failed', 0)} failed)")
        except (ValueError, json.JSONDecodeError) as error:
            result["error"] = str(error)
            log(f"  idle-{count:<17} {system.name:11} FAILED: {error}")
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
        self.results.append(result)

    def run(self) -> None:
        scenarios = [s for s in SCENARIOS if not self.args.scenarios or s.name in self.args.scenarios]
        order = random.Random(self.args.seed)
        for round_ in range(1, self.args.rounds + 1):
            log(f"round {round_} of {self.args.rounds}")
            plan = []
            for scenario in scenarios:
                entries = [None] + [s for s in self.bench.systems.values() if self.applies(scenario, s)]
                order.shuffle(entries)
                plan.append((scenario, entries))
            order.shuffle(plan)
            for scenario, entries in plan:
                for system in entries:
                    self.measure(scenario, system, round_)
        if self.args.idle:
            for count in IDLE_COUNTS:
                for round_ in range(1, self.args.idle_rounds + 1):
                    entries = list(self.bench.systems.values())
                    order.shuffle(entries)
                    for system in entries:
                        self.measure_idle(count, system, round_)


# --------------------------------------------------------------------------
# Summary


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarize(results: list[dict], systems: list[str]) -> dict:
    summary: dict = {}
    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in results:
        if "error" not in r:
            by_key.setdefault((r["scenario"], r["system"]), []).append(r)
    for (scenario, system), rows in by_key.items():
        entry = {"runs": len(rows)}
        for key in ("rps", "bytes_per_s", "p50_us", "p99_us", "cpu_s_per_10k", "cpu_utilization", "peak_pss_mib",
                    "kib_per_connection", "errors"):
            values = [r[key] for r in rows if key in r]
            if values:
                entry[key] = median(values)
        if any(r.get("closes_idle") for r in rows):
            entry["closes_idle"] = True
        summary.setdefault(scenario, {})[system] = entry
    for scenario, entries in summary.items():
        direct = entries.get("direct")
        for system, entry in entries.items():
            if direct and system != "direct" and "p50_us" in entry:
                entry["added_p50_us"] = entry["p50_us"] - direct["p50_us"]
                entry["added_p99_us"] = entry["p99_us"] - direct["p99_us"]
        tf = entries.get("tameflared")
        if tf and "rps" in tf:
            for system, entry in entries.items():
                if system not in ("tameflared", "direct") and entry.get("rps"):
                    entry["tameflared_ratio"] = tf["rps"] / entry["rps"]
    return summary


def print_table(summary: dict) -> None:
    order = [s.name for s in SCENARIOS] + [f"idle-{n}" for n in IDLE_COUNTS]
    for scenario in order:
        if scenario not in summary:
            continue
        entries = summary[scenario]
        print(f"\n{scenario}")
        if scenario.startswith("idle-"):
            print(f"  {'system':11} {'KiB per idle connection':>24}")
            for system, e in sorted(entries.items()):
                figure = (f"{e['kib_per_connection']:.1f}" if "kib_per_connection" in e
                          else "closes them" if e.get("closes_idle") else "-")
                print(f"  {system:11} {figure:>24}")
            continue
        print(f"  {'system':11} {'req/s':>10} {'MiB/s':>8} {'p50 µs':>9} {'p99 µs':>9} {'+p50 µs':>9} "
              f"{'+p99 µs':>9} {'CPU s/10k':>10} {'CPU use':>8} {'peak MiB':>9} {'tf ×':>6}")
        for system in ["direct"] + SYSTEMS:
            e = entries.get(system)
            if not e or "rps" not in e:
                continue

            def f(key: str, fmt: str) -> str:
                return format(e[key], fmt) if key in e else "-"

            print(f"  {system:11} {e['rps']:>10.0f} {e['bytes_per_s'] / 2**20:>8.1f} {e['p50_us']:>9.0f} "
                  f"{e['p99_us']:>9.0f} {f('added_p50_us', '>9.0f'):>9} {f('added_p99_us', '>9.0f'):>9} "
                  f"{f('cpu_s_per_10k', '>10.2f'):>10} {f('cpu_utilization', '>8.2f'):>8} "
                  f"{f('peak_pss_mib', '>9.1f'):>9} {f('tameflared_ratio', '>6.1f'):>6}")


def markdown(summary: dict) -> str:
    """The summary as Markdown tables (docs/performance.md takes them as they are)."""
    lines = ["| scenario | system | requests/s | MiB/s | p50 | p99 | added p50 | added p99 | CPU s per 10k "
             "| peak PSS | tameflared × |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    titles = {s.name: s.title for s in SCENARIOS}

    def us(value: float | None) -> str:
        if value is None:
            return ""
        return f"{value / 1000:,.2f} ms" if abs(value) >= 1000 else f"{value:,.0f} µs"

    for scenario in [s.name for s in SCENARIOS]:
        entries = summary.get(scenario, {})
        for system in ["direct"] + SYSTEMS:
            e = entries.get(system)
            if not e or "rps" not in e:
                continue
            name = f"`{scenario}` {titles[scenario]}" if system == "direct" else ""
            ratio = f"{e['tameflared_ratio']:.1f}" if "tameflared_ratio" in e else ""
            cpu = f"{e['cpu_s_per_10k']:.2f}" if "cpu_s_per_10k" in e else ""
            pss = f"{e['peak_pss_mib']:.0f} MiB" if "peak_pss_mib" in e else ""
            lines.append(f"| {name} | {system} | {e['rps']:,.0f} | {e['bytes_per_s'] / 2**20:,.1f} | {us(e['p50_us'])} "
                         f"| {us(e['p99_us'])} | {us(e.get('added_p50_us'))} | {us(e.get('added_p99_us'))} | {cpu} "
                         f"| {pss} | {ratio} |")
    idle = [n for n in IDLE_COUNTS if f"idle-{n}" in summary]
    if idle:
        lines += ["", "| system | " + " | ".join(f"KiB per idle connection, {n:,} held" for n in idle) + " |",
                  "|---|" + "---|" * len(idle)]
        for system in SYSTEMS:
            cells = []
            for n in idle:
                e = summary[f"idle-{n}"].get(system, {})
                cells.append(f"{e['kib_per_connection']:.1f}" if "kib_per_connection" in e else
                             "closes them" if e.get("closes_idle") else "")
            if any(cells):
                lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, out: Path, caption: str) -> Path | None:
    if not shutil.which("gnuplot"):
        log("gnuplot not found: no chart")
        return None
    data = out / "chart.dat"
    scenarios = [s.name for s in SCENARIOS if s.name in summary]
    if not scenarios:
        return None
    systems = SYSTEMS
    with open(data, "w") as f:
        f.write("scenario " + " ".join(systems) + "\n")
        for scenario in scenarios:
            values = []
            for system in systems:
                e = summary[scenario].get(system, {})
                values.append(f"{e['rps']:.1f}" if e.get("rps") else "0")
            f.write(f"{scenario} " + " ".join(values) + "\n")
    png = out / "results.png"
    script = f"""
set terminal pngcairo size 1400,700 font "DejaVu Sans,11"
set output "{png}"
set title "{caption}" noenhanced
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9
set logscale y
set yrange [10:*]
set ylabel "requests/s (log scale, higher is better)"
set xtics rotate by -25 noenhanced
set key top right
set grid ytics
plot for [col=2:{len(systems) + 1}] "{data}" using col:xtic(1) title columnhead
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    return png


def machine_description() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    os_name = "?"
    try:
        os_name = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory, 1), "kernel": platform.release(),
            "os": os_name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", required=True, help="build directory with daemon/tameflared, cli/tf and "
                        "bench/tf_loadgen (Release)")
    parser.add_argument("--out", default="bench-results", help="where results.json and results.png go")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--systems", nargs="+", default=SYSTEMS, choices=SYSTEMS)
    parser.add_argument("--scenarios", nargs="*", help="only these (names in the table)")
    parser.add_argument("--no-idle", dest="idle", action="store_false", help="skip the idle-connection runs")
    parser.add_argument("--idle-rounds", type=int, default=1)
    parser.add_argument("--no-transparent", action="store_true", help="no BPF (transparent) scenarios")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configurations, logs)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if os.geteuid() != 0:
        fail("run as root: the peers bind, tameflared attaches BPF programs, and /etc/hosts is replaced in a "
             "private mount namespace")
    if not args.inner:
        # A private mount namespace in which /etc/hosts names the upstream, for
        # the peers that resolve through the system resolver.
        os.execvp("unshare", ["unshare", "--mount", "--propagation", "private", sys.executable,
                              str(Path(__file__).resolve()), "--inner"] + sys.argv[1:])
    if os.cpu_count() < 2:
        fail("needs 2 CPUs: the proxy under test on CPU 1, the load generator and the upstream on CPU 0")
    build = Path(args.build)
    for binary in ("daemon/tameflared", "cli/tf", "bench/tf_loadgen"):
        if not (build / binary).exists():
            fail(f"{build / binary} is missing: build with `./build.sh bench-peers` (or ninja -C {build} "
                 "tameflared tf tf_loadgen)")
    for tool in ("nginx", "squid", "mitmdump", "tinyproxy", "taskset", "openssl", "unshare"):
        if not shutil.which(tool):
            fail(f"{tool} is not installed: `./build.sh bench-peers` installs the peers from Debian")

    hosts = Path(tempfile.mkstemp(prefix="tf-peers-hosts-")[1])
    hosts.write_text(f"127.0.0.1 localhost\n{UPSTREAM_ADDR} {HOST} {TUNNEL_HOST}\n")
    os.chmod(hosts, 0o644)
    run(["mount", "--bind", str(hosts), "/etc/hosts"])

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args)
    runner = Runner(bench, args)

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        bench.start_all()
        log(f"work directory {bench.work}")
        runner.run()
    finally:
        bench.cleanup()
        hosts.unlink(missing_ok=True)

    summary = summarize(runner.results, list(bench.systems))
    machine = machine_description()
    versions = {name: s.version for name, s in bench.systems.items()}
    versions["nginx (upstream)"] = version_of(["nginx", "-v"], r"nginx/(\S+)")
    document = {
        "date": started.isoformat(timespec="seconds"), "machine": machine, "versions": versions,
        "notes": {name: s.notes for name, s in bench.systems.items()},
        "settings": {"rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
                     "seed": args.seed, "proxy_cpu": PROXY_CPU, "client_cpu": CLIENT_CPU,
                     "load_generator": "tf_loadgen (bench/peers/loadgen.cpp)"},
        "summary": summary, "runs": runner.results,
    }
    (out / "results.json").write_text(json.dumps(document, indent=1))
    print(f"\n{started:%Y-%m-%d %H:%M} UTC, {machine['cpu']}, {machine['cores']} cores, {machine['os']}, "
          f"kernel {machine['kernel']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"medians of {args.rounds} rounds of {args.duration:g} s; proxy on CPU {PROXY_CPU}, load generator and "
          f"upstream on CPU {CLIENT_CPU}")
    print_table(summary)
    (out / "results.md").write_text(markdown(summary))
    caption = (f"{started:%Y-%m-%d}, {machine['cores']} cores ({machine['cpu']}), "
               + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "nginx (upstream)"))
    png = plot(summary, out, caption)
    print(f"\nresults: {out / 'results.json'}, {out / 'results.md'}" + (f", chart: {png}" if png else ""))
    failures = [r for r in runner.results if "error" in r]
    if failures:
        print(f"{len(failures)} runs failed; see results.json", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
