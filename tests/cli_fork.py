"""Run the CLI in forked processes, so that the suite does not pay a Python
start-up and a typer import for each of its ~1,500 CLI calls.

Why: each ``python -m evstore`` costs ~100 ms of CPU before it does anything
(the interpreter, typer, the CLI's modules); the suite runs the CLI well
over a thousand times, which was half of its CPU time and most of its
wall-clock time on two cores.  A *zygote* -- one per test process, started
on first use -- imports the CLI once, and each call forks it: a real,
separate process with its own file descriptors, environment, working
directory, signals and exit status, running the very code
``python -m evstore`` runs, minus the start-up.

What it does not cover, on purpose, is the start-up itself (imports, the
signal handlers installed before typer is imported, the interpreter's
reading of PYTHON* variables): calls whose environment differs from the
zygote's in anything the interpreter reads at start (PYTHON*, LC_*, LANG)
are executed for real, as are all the tests that spawn ``python -m
evstore`` themselves (followers, signals, pipes, crashes, docs, start-up).
``EVSTORE_TEST_EXEC=1`` executes every call for real.

Protocol: the test process connects to the zygote's unix socket and sends
one JSON line (argv, env, cwd and the paths of the stdin/stdout/stderr
files); the zygote forks a *waiter*, which forks the CLI process, sends its
pid, waits for it and sends its exit status (negative: killed by that
signal, as :mod:`subprocess` reports it).
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile

_START_VARS = ("PYTHON", "LC_", "LANG")
_ENTRY = ""  # evstore/__main__.py (sys.argv[0] of `python -m evstore`)


def _start_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(_START_VARS)}


class Zygote:
    """The test process's handle on its zygote (started on first use)."""

    def __init__(self, env: dict, root: str):
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
        return self.proc.poll() is None and _start_env(env) == _start_env(self.env)

    def run(self, argv: list[str], env: dict, input: bytes, timeout: float,
            cwd) -> subprocess.CompletedProcess:
        fd, base = tempfile.mkstemp(prefix="cli-", dir=self.dir)
        os.close(fd)
        paths = {"stdin": base + ".in", "stdout": base + ".out", "stderr": base + ".err"}
        with open(paths["stdin"], "wb") as f:
            f.write(input)
        req = {"argv": argv, "env": env, "cwd": str(cwd) if cwd is not None else os.getcwd(),
               **paths}
        full = [sys.executable, "-m", "evstore", *argv]
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.settimeout(timeout)
            conn.connect(self.sock)
            conn.sendall(json.dumps(req).encode() + b"\n")
            reader = conn.makefile("rb")
            pid = int(reader.readline())
            try:
                line = reader.readline()
            except (socket.timeout, TimeoutError):
                os.kill(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(full, timeout) from None
            if not line:
                raise RuntimeError("the CLI zygote's waiter died")
            code = int(line)
            with open(paths["stdout"], "rb") as f:
                out = f.read()
            with open(paths["stderr"], "rb") as f:
                err = f.read()
            return subprocess.CompletedProcess(full, code, out, err)
        finally:
            conn.close()
            for p in (base, *paths.values()):
                try:
                    os.unlink(p)
                except OSError:
                    pass

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort at exit
            self.proc.kill()
        try:
            os.unlink(self.sock)
            os.rmdir(self.dir)
        except OSError:
            pass


# -- the zygote itself ------------------------------------------------------------------

def _cli_process(req: dict) -> None:
    """Become ``python -m evstore ARGV``: never returns."""
    code = 1
    try:
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        for fd, path, flags in ((0, req["stdin"], os.O_RDONLY),
                                (1, req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            f = os.open(path, flags, 0o600)
            os.dup2(f, fd)
            os.close(f)
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


def _waiter(conn: socket.socket, req: dict) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        conn.close()
        _cli_process(req)
    try:
        conn.sendall(f"{pid}\n".encode())
        _, status = os.waitpid(pid, 0)
        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
    finally:
        os._exit(0)


def serve(path: str) -> None:
    # What every CLI call imports, imported once (the rest loads on use).
    import evstore.cli  # noqa: F401
    import evstore.cli.app  # noqa: F401
    import evstore.cli.common  # noqa: F401
    import evstore.core.store  # noqa: F401
    import evstore.backends.files.engine  # noqa: F401

    global _ENTRY
    import importlib.util
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
            req = json.loads(conn.makefile("rb").readline())
            if os.fork() == 0:
                srv.close()
                _waiter(conn, req)
            conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
