#!/usr/bin/env python3
"""Runs inside an agent and tries to get something outside it to act for it:
processes (ptrace, signals, pidfds, /proc), unix sockets (a forwarder, an
abstract socket, tameflared's own sockets, the system bus), listening on a
non-loopback address, and root's files. Prints one "name=result" line per
attempt; the test decides what is right. Only loopback is ever dialed.

Usage: sandbox_probe.py OUTSIDE_PID FORWARDER_PATH ABSTRACT_NAME SOCKET...
(SOCKET: unix sockets that must be unreachable, each tried in turn.)"""
import ctypes
import os
import socket
import sys

from probe_attempt import attempt

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_ATTACH, PTRACE_DETACH = 16, 17


def ptrace_attach(pid):
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) != 0:
        raise OSError(ctypes.get_errno(), "ptrace")
    libc.ptrace(PTRACE_DETACH, pid, None, None)
    return "attached"


def pids():
    return ",".join(sorted((entry for entry in os.listdir("/proc") if entry.isdigit()), key=int))


def read(path):
    with open(path, "rb") as f:
        return f"read {len(f.read())} bytes"


def pidfd(pid):
    os.close(os.pidfd_open(pid))
    return "opened"


def unix(address, kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_UNIX, kind) as s:
        s.settimeout(5)
        if kind == socket.SOCK_DGRAM:
            s.sendto(b"x", address)
            return "sent"
        s.connect(address)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return "connected"


def bound(family, address):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[0]


def user_namespace():
    child = os.fork()
    if child == 0:
        os._exit(0 if libc.unshare(0x10000000) == 0 else ctypes.get_errno())  # CLONE_NEWUSER
    error = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    if error:
        raise OSError(error, "unshare")
    return "made"


def write(path):
    with open(path, "w") as f:
        f.write("planted\n")
    os.unlink(path)
    return "written"


def main():
    outside, forwarder, abstract = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    attempt("uid", lambda: str(os.getuid()))
    attempt("groups", lambda: ",".join(str(g) for g in sorted(os.getgroups())))
    attempt("pid", lambda: str(os.getpid()))
    attempt("proc_pids", pids)
    attempt("ptrace_outside", lambda: ptrace_attach(outside))
    attempt("ptrace_init", lambda: ptrace_attach(1))
    attempt("environ_outside", lambda: read(f"/proc/{outside}/environ"))
    attempt("environ_init", lambda: read("/proc/1/environ"))
    attempt("signal_outside", lambda: os.kill(outside, 0) or "sent")
    attempt("pidfd_outside", lambda: pidfd(outside))
    attempt("forwarder", lambda: unix(forwarder))
    attempt("forwarder_dgram", lambda: unix(forwarder + ".dgram", socket.SOCK_DGRAM))
    attempt("forwarder_relative", lambda: (os.chdir(os.path.dirname(forwarder)),
                                           unix(os.path.basename(forwarder)))[1])
    attempt("abstract", lambda: unix("\0" + abstract))
    for index, path in enumerate(sys.argv[4:]):
        attempt(f"socket{index}", lambda: unix(path))
    attempt("bind_any", lambda: bound(socket.AF_INET, "0.0.0.0"))
    attempt("bind_any6", lambda: bound(socket.AF_INET6, "::"))
    attempt("bind_other", lambda: bound(socket.AF_INET, "192.0.2.1"))
    attempt("user_namespace", user_namespace)
    attempt("write_etc", lambda: write(f"/etc/tameflare-planted-{os.getpid()}"))


main()
