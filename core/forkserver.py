"""The test kit's fork server: ``convergence`` command lines started by forking a process that has
already imported everything, instead of a new interpreter each time.

A test suite starts hundreds of ``convergence serve`` processes; most of each start went on
importing gevent, SQLAlchemy, Alembic, Flask and the plugins (0.6 s of 1.4 s on the CI machine).
:meth:`ForkServer.launch` asks the fork server (one per test session: the ``fork_server``
fixture of :mod:`convergence.testing`) to fork a child that
runs the command line exactly as the ``convergence`` script does — same ``main`` path, its own
arguments, working directory, environment and output pipe — and returns a :class:`Forked`, which
behaves like the ``subprocess.Popen`` it replaces (``pid``, ``stdout``, ``poll``, ``wait``,
``send_signal``, ``terminate``, ``kill``, ``returncode``).

The fork server itself (``python -m convergence.forkserver FD``) patches gevent first, as
``convergence.main`` does, then imports the command line and every installed plugin, and never
starts gevent's hub: it waits with the original blocking ``select``, forks with ``posix.fork`` and
reaps children from its SIGCHLD handler, so each child starts as a fresh single-threaded process
(``random`` reseeds itself after a fork). It talks to the test process over a Unix
``SOCK_SEQPACKET`` socket: a request is a JSON object (``argv``, ``cwd``, ``env``) with the write
end of the child's output pipe attached (SCM_RIGHTS); the answers are ``{"pid": N}`` for each
request and ``{"exit": N, "status": S}`` (``Popen.returncode`` semantics) when a child ends.
Only the state a module builds when it is imported is shared, which is why plugins keep their
state on per-core objects (docs/plugins.md, "Testing your plugin").
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading

MAX_REQUEST = 1 << 20  # bytes of one request (the environment is most of it)


class Forked:
    """A child of the fork server, with the part of ``subprocess.Popen``'s interface tests use."""

    def __init__(self, server: "ForkServer", pid: int, stdout):
        self._server = server
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.status(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._server.status(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(15)

    def kill(self) -> None:
        self.send_signal(9)


class ForkServer:
    """The test process's side: one fork server process and the thread that reads its answers."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, "-m", "convergence.forkserver", str(theirs.fileno())],
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        theirs.close()
        self.sock = ours
        self._changed = threading.Condition()
        self._pids: list[int] = []
        self._exits: dict[int, int] = {}
        self._requesting = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while answer := self.sock.recv(4096):
            answer = json.loads(answer)
            with self._changed:
                if "pid" in answer:
                    self._pids.append(answer["pid"])
                else:
                    self._exits[answer["exit"]] = answer["status"]
                self._changed.notify_all()
        with self._changed:
            self.sock.close()
            self._changed.notify_all()

    def _alive(self) -> bool:
        return self.sock.fileno() != -1

    def close(self) -> None:
        """End the fork server (its children go on until they are stopped)."""
        self.sock.shutdown(socket.SHUT_RDWR)
        self.proc.wait()

    def launch(self, argv: list[str], cwd, env: dict) -> Forked:
        """Run the ``convergence`` command line ``argv`` (without the program name) in a forked
        child with this working directory and environment; its stdout and stderr are the returned
        process's ``stdout``."""
        read, write = os.pipe()
        try:
            request = json.dumps({"argv": argv, "cwd": str(cwd), "env": env}).encode()
            with self._requesting, self._changed:
                socket.send_fds(self.sock, [request], [write])
                self._changed.wait_for(lambda: self._pids or not self._alive(), 30)
                if not self._pids:
                    raise RuntimeError("the test kit's fork server did not answer")
                pid = self._pids.pop(0)
        finally:
            os.close(write)
        return Forked(self, pid, os.fdopen(read, "r", encoding="utf-8", errors="replace"))

    def status(self, pid: int, timeout: float | None) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits or not self._alive(), timeout)
            if pid not in self._exits and not self._alive():
                raise RuntimeError("the test kit's fork server has gone")
            return self._exits.pop(pid, None)


# ---- the fork server process ------------------------------------------------------------------

def _serve(fd: int) -> None:
    from gevent import monkey

    monkey.patch_all()  # what convergence.main does first, before anything else is imported
    import _signal
    import posix
    from importlib.metadata import entry_points

    from convergence.cli import cli

    for entry in entry_points(group="convergence.plugins"):
        entry.load()
    select = monkey.get_original("select", "select")
    sock = monkey.get_original("socket", "socket")(fileno=fd)

    def reap(*_):
        while True:
            try:
                pid, status = posix.waitpid(-1, posix.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = -posix.WTERMSIG(status) if posix.WIFSIGNALED(status) else posix.WEXITSTATUS(status)
            sock.sendall(json.dumps({"exit": pid, "status": code}).encode())

    _signal.signal(_signal.SIGCHLD, reap)
    while True:
        select([sock], [], [])
        message, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 1)
        if not message:
            return  # the test process has gone
        request = json.loads(message)
        pid = posix.fork()
        if pid == 0:
            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
            sock.close()
            _run(cli, request, fds[0])
        os.close(fds[0])
        sock.sendall(json.dumps({"pid": pid}).encode())


def _run(cli, request: dict, output: int) -> None:
    """In the child: become ``convergence ARGV`` and exit with its status."""
    code = 1
    try:
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        cli.main(args=request["argv"], prog_name="convergence")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - what the interpreter would print before exiting 1
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
