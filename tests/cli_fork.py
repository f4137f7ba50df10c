"""Run the CLI in forked processes, so that the suite does not pay a Python
start-up and a typer import for each of its thousands of CLI calls.

Why: each ``python -m evstore`` costs ~100 ms of CPU before it does anything
(the interpreter, typer, the CLI's modules); the suite runs the CLI a few
thousand times, which was half of its CPU time and most of its wall-clock
time on two cores.  A *zygote* -- one per test process, started on first
use -- imports the CLI once, and each call forks it: a real, separate
process with the caller's stdin/stdout/stderr (the very file descriptors,
passed over a unix socket: pipes, files, EOF and EPIPE behave as they do
for an executed command), its environment, working directory, signals and
exit status, running the code ``python -m evstore`` runs, minus the
start-up.

Two clients: :meth:`Zygote.run` (``run_cli`` in conftest.py) and the
``evstore`` command the docs tests put on PATH (:func:`client_main`, run
with ``python -S -E``: ~10 ms).  The command forwards SIGINT, SIGTERM and
SIGHUP to the CLI process and exits as it did.

What it does not cover, on purpose, is the start-up itself (imports, the
signal handlers installed before typer is imported, the interpreter's
reading of PYTHON* variables): calls whose environment differs from the
zygote's in anything the interpreter reads at start (PYTHON*, LC_*, LANG)
are executed for real, as are all the tests that spawn ``python -m
evstore`` themselves (followers, signals, crashes, start-up).
``EVSTORE_TEST_EXEC=1`` executes every call for real.

Protocol: the client connects to the zygote's unix socket and sends one
JSON line (argv, env, cwd) with its three file descriptors attached; the
zygote forks a *waiter*, which forks the CLI process, sends its pid, waits
for it and sends its exit status (negative: killed by that signal, as
:mod:`subprocess` reports it).  Every process closes the descriptors it
does not use at once, so a reader of the caller's pipe sees EOF when the
CLI process ends.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys

_START_VARS = ("PYTHON", "LC_", "LANG")
_ENTRY = ""  # evstore/__main__.py (sys.argv[0] of `python -m evstore`)


def start_env(env: dict) -> dict:
    """What the interpreter reads at start-up (PYTHONPATH without empty parts)."""
    out = {k: v for k, v in env.items() if k.startswith(_START_VARS) and v}
    if "PYTHONPATH" in out:
        out["PYTHONPATH"] = os.pathsep.join(p for p in out["PYTHONPATH"].split(os.pathsep) if p)
    return out


def _call(sock_path: str, argv: list, env: dict, cwd: str, fds: list[int], timeout=None):
    """Send one call; returns (connection, reader, pid)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    conn.connect(sock_path)
    req = json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode() + b"\n"
    socket.send_fds(conn, [req], fds)
    reader = conn.makefile("rb")
    return conn, reader, int(reader.readline())


class Zygote:
    """The test process's handle on its zygote (started on first use)."""

    def __init__(self, env: dict, root: str):
        import subprocess
        import tempfile

        self.env = dict(env)
        self.dir = tempfile.mkdtemp(prefix="evstore-zygote-")
        self.sock = os.path.join(self.dir, "s")
        self.proc = subprocess.Popen([sys.executable, __file__, self.sock], cwd=root,
                                     env=self.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        ready = self.proc.stdout.readline()
        if ready.strip() != b"ready":
            raise RuntimeError(f"the CLI zygote did not start: {ready!r}")

    def usable_for(self, env: dict) -> bool:
        return self.proc.poll() is None and start_env(env) == start_env(self.env)

    def run(self, argv: list[str], env: dict, input: bytes, timeout: float, cwd):
        import subprocess
        import tempfile

        full = [sys.executable, "-m", "evstore", *argv]
        files = [tempfile.TemporaryFile(dir=self.dir) for _ in range(3)]
        try:
            files[0].write(input)
            files[0].flush()
            files[0].seek(0)
            conn, reader, pid = _call(self.sock, argv, env,
                                      str(cwd) if cwd is not None else os.getcwd(),
                                      [f.fileno() for f in files], timeout)
            try:
                line = reader.readline()
            except (socket.timeout, TimeoutError):
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(full, timeout) from None
            finally:
                conn.close()
            if not line:
                raise RuntimeError("the CLI zygote's waiter died")
            out = []
            for f in files[1:]:
                f.seek(0)
                out.append(f.read())
            return subprocess.CompletedProcess(full, int(line), out[0], out[1])
        finally:
            for f in files:
                f.close()

    def command(self, path: str) -> None:
        """Write the ``evstore`` command at ``path``: a client of this zygote
        when the caller's start-up environment matches, else the real thing."""
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nexec {sys.executable} -S -E {os.path.abspath(__file__)} "
                    f"--client {self.sock} \"$@\"\n")
        with open(self.sock + ".env", "w") as f:
            json.dump(start_env(self.env), f)
        os.chmod(path, 0o755)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            self.proc.kill()
        import shutil
        shutil.rmtree(self.dir, ignore_errors=True)


def client_main(sock_path: str, argv: list[str]) -> None:
    """The ``evstore`` command of the docs tests (run with -S -E)."""
    env = dict(os.environ)
    try:
        with open(sock_path + ".env") as f:
            same = json.load(f) == start_env(env)
        if not same:
            raise OSError("another start-up environment")
        conn, reader, pid = _call(sock_path, argv, env, os.getcwd(), [0, 1, 2])
    except OSError:
        os.execv(sys.executable, [sys.executable, "-m", "evstore", *argv])

    def forward(sig, _frame):
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            line = reader.readline()
            break
        except InterruptedError:
            continue
    code = int(line) if line else 1
    if code < 0:  # killed by a signal: so is this command
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


# -- the zygote itself ------------------------------------------------------------------

def _cli_process(req: dict, fds: list[int]) -> None:
    """Become ``python -m evstore ARGV`` on the caller's descriptors: never returns."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv = [_ENTRY, *req["argv"]]  # as `python -m evstore` sets it
        try:
            from evstore.cli import main
            main()
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code & 0xFF
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - what the interpreter would do
            import traceback
            traceback.print_exc()
            code = 1
        import atexit
        import threading
        threading._shutdown()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed pipe, as at exit
                pass
    finally:
        os._exit(code)


def _waiter(conn: socket.socket, req: dict, fds: list[int]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _cli_process(req, fds)
    for fd in fds:  # the caller's pipes: only the CLI process keeps them
        os.close(fd)
    try:
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    finally:
        os._exit(0)


def serve(path: str) -> None:
    global _ENTRY
    import importlib.util
    import select

    # What every CLI call imports, imported once (the rest loads on use).
    import evstore.cli  # noqa: F401
    import evstore.cli.app  # noqa: F401
    import evstore.cli.common  # noqa: F401
    import evstore.core.store  # noqa: F401
    import evstore.backends.files.engine  # noqa: F401
    _ENTRY = importlib.util.find_spec("evstore.__main__").origin

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # waiters are reaped for us
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        ready, _, _ = select.select([srv, sys.stdin], [], [])
        if sys.stdin in ready and not os.read(sys.stdin.fileno(), 1):
            return  # the test process is gone
        if srv in ready:
            conn, _ = srv.accept()
            msg, fds, _flags, _addr = socket.recv_fds(conn, 1 << 20, 3)
            while not msg.endswith(b"\n"):
                more = conn.recv(1 << 20)
                if not more:
                    break
                msg += more
            if os.fork() == 0:
                srv.close()
                _waiter(conn, json.loads(msg), fds)
            conn.close()
            for fd in fds:
                os.close(fd)


if __name__ == "__main__":
    if sys.argv[1] == "--client":
        client_main(sys.argv[2], sys.argv[3:])
    else:
        serve(sys.argv[1])
