#!/usr/bin/env python3
"""Runs a command (tf run ...) on a new pseudo-terminal of 40x100, presses
Ctrl-C once the command printed "ready", and prints what the terminal showed
and the exit status. The terminal tests of tests/privileged use it."""
import fcntl, os, pty, struct, sys, termios, time, select
pid, master = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
out = b""
deadline = time.time() + 10
sent = False
while time.time() < deadline:
    r, _, _ = select.select([master], [], [], 0.2)
    if r:
        try:
            data = os.read(master, 1024)
        except OSError:
            break
        if not data:
            break
        out += data
    if b"ready" in out and not sent:
        os.write(master, b"\x03")
        sent = True
_, status = os.waitpid(pid, 0)
print(repr(out.decode(errors="replace")), os.waitstatus_to_exitcode(status))
