"""The test kit's fork server: ``convergence`` command lines started by forking a process that has
already imported everything, instead of a new interpreter each time.

A test suite starts hundreds of ``convergence serve`` processes; most of each start went on
importing gevent, SQLAlchemy, Alembic, Flask and the plugins (0.6 s of 1.4 s on the CI machine).
:meth:`ForkServer.launch` asks the fork server (one per test session: the ``fork_server``
fixture of :mod:`convergence.testing`) to fork a child that
runs the command line exactly as the ``convergence`` script does — same ``main`` path, its own
arguments, working directory, environment, stdin and output pipes — and returns a :class:`Forked`,
which behaves like the ``subprocess.Popen`` it replaces (``pid``, ``args``, ``stdin``, ``stdout``,
``stderr``, ``poll``, ``wait``, ``communicate``, ``send_signal``, ``terminate``, ``kill``,
``returncode``). Its stdout is a pipe; stderr shares it (``stderr=subprocess.STDOUT``, what a
server's log wants) or is a pipe of its own (``subprocess.PIPE``); stdin is ``/dev/null`` or, with
``stdin=subprocess.PIPE``, a pipe; ``text`` gives streams of ``str`` (UTF-8) or ``bytes``.
:meth:`ForkServer.run` is ``subprocess.run(capture_output=True, input=..., timeout=...)`` on it: a
command run to its end (the ``convergence user …`` and ``db …`` commands of the tests), stdout and
stderr apart, the child killed if the timeout expires.

The fork server itself (``python -P -m convergence.forkserver FD``) patches gevent first, as
``convergence.main`` does, then imports the command line and every installed plugin, and never
starts gevent's hub: it waits with the original blocking ``select``, forks with ``posix.fork`` and
reaps children from its SIGCHLD handler, so each child starts as a fresh single-threaded process
(``random`` reseeds itself after a fork; new ``sys.stdin``, ``stdout`` and ``stderr`` on the
child's own descriptors) and ends as the interpreter ends the script (exit handlers, the
``SystemExit`` status, a traceback and 1, SIGINT for ``KeyboardInterrupt``). What a fresh
interpreter reads only at its start — ``PYTHONPATH``, the installed plugins' entry points, the
standard streams' encoding — is the fork server's: a test of those runs the script itself. It
talks to the test process over a Unix ``SOCK_SEQPACKET`` socket: a request is a JSON object
(``argv``, ``cwd``, ``env``) with the child's stdin, stdout and stderr attached (SCM_RIGHTS: the
read end of a pipe or ``/dev/null``, the write ends of one or two pipes); the answers are
``{"pid": N}`` for each request and ``{"exit": N, "status": S}`` (``Popen.returncode``
semantics) when a child ends.
Only the state a module builds when it is imported is shared, which is why plugins keep their
state on per-core objects (docs/plugins.md, "Testing your plugin").
"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time

MAX_REQUEST = 1 << 20  # bytes of one request (the environment is most of it)


class Forked:
    """A child of the fork server, with the part of ``subprocess.Popen``'s interface tests use."""

    def __init__(self, server: "ForkServer", args: list[str], pid: int, stdin, stdout, stderr):
        self._server = server
        self.args = args
        self.pid = pid
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode: int | None = None
        self._talk: list[threading.Thread] | None = None  # communicate's threads, once started
        self._read: dict[str, str | bytes] = {}

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._server.status(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._server.status(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, input=None, timeout: float | None = None):
        """``Popen.communicate``: writes ``input`` to stdin (if a pipe) and closes it, reads stdout
        and stderr (those that are pipes) to their end, waits for the exit; returns ``(stdout,
        stderr)``. ``TimeoutExpired`` leaves the child running: call again (after ``kill``) to
        collect the rest."""
        if self._talk is None:
            self._talk = [threading.Thread(target=self._drain, args=(name,), daemon=True)
                          for name in ("stdout", "stderr") if getattr(self, name) is not None]
            if self.stdin is not None:
                self._talk.append(threading.Thread(target=self._feed, args=(input,), daemon=True))
            for thread in self._talk:
                thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        left = lambda: None if deadline is None else max(0.0, deadline - time.monotonic())  # noqa: E731
        for thread in self._talk:
            thread.join(left())
            if thread.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(left())
        return self._read.get("stdout"), self._read.get("stderr")

    def _drain(self, name: str) -> None:
        with getattr(self, name) as stream:
            self._read[name] = stream.read()

    def _feed(self, input) -> None:
        try:
            with self.stdin:
                if input:
                    self.stdin.write(input)
        except BrokenPipeError:
            pass  # the child did not read it all (Popen.communicate ignores this too)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(15)

    def kill(self) -> None:
        self.send_signal(9)


def _pipe(child_reads: bool) -> tuple[int, int]:
    """A new pipe as (the child's end, ours)."""
    read, write = os.pipe()
    return (read, write) if child_reads else (write, read)


class ForkServer:
    """The test process's side: one fork server process and the thread that reads its answers."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # -P: no current folder at the head of sys.path, which the script does not have either
        self.proc = subprocess.Popen([sys.executable, "-P", "-m", "convergence.forkserver", str(theirs.fileno())],
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

    def launch(self, argv: list[str], cwd, env: dict, stdin=None, stderr=subprocess.STDOUT,
               text: bool = True) -> Forked:
        """Run the ``convergence`` command line ``argv`` (without the program name) in a forked
        child with this working directory and environment. Its stdout is the returned process's
        ``stdout``; its stderr goes there too (``subprocess.STDOUT``) or to ``stderr``
        (``subprocess.PIPE``); its stdin is ``/dev/null``, or ``stdin`` with ``subprocess.PIPE``.
        ``text``: the pipes carry ``str`` (UTF-8), else ``bytes``."""
        ends = [_pipe(child_reads=True) if stdin == subprocess.PIPE else (os.open(os.devnull, os.O_RDONLY), None),
                _pipe(child_reads=False)]  # (the child's end, ours) of its stdin, stdout, stderr
        ends.append(_pipe(child_reads=False) if stderr == subprocess.PIPE else (ends[1][0], None))
        try:
            request = json.dumps({"argv": argv, "cwd": str(cwd), "env": env}).encode()
            with self._requesting, self._changed:
                socket.send_fds(self.sock, [request], [theirs for theirs, _ in ends])
                self._changed.wait_for(lambda: self._pids or not self._alive(), 30)
                if not self._pids:
                    raise RuntimeError("the test kit's fork server did not answer")
                pid = self._pids.pop(0)
        except BaseException:
            for _, ours in ends:
                if ours is not None:
                    os.close(ours)
            raise
        finally:
            for theirs in {theirs for theirs, _ in ends}:
                os.close(theirs)
        options = {"encoding": "utf-8", "errors": "replace"} if text else {}
        streams = [None if ours is None else os.fdopen(ours, mode + ("" if text else "b"), **options)
                   for (_, ours), mode in zip(ends, "wrr")]
        return Forked(self, ["convergence", *argv], pid, *streams)

    def run(self, argv: list[str], cwd, env: dict, input=None, timeout: float | None = None,
            text: bool = True) -> subprocess.CompletedProcess:
        """``subprocess.run(capture_output=True, input=input, timeout=timeout, text=text)`` for the
        command line ``argv``: stdout and stderr apart, ``input`` (if not None) on a stdin pipe,
        the child killed and ``TimeoutExpired`` raised if it outlasts ``timeout``."""
        child = self.launch(argv, cwd, env, stdin=None if input is None else subprocess.PIPE,
                            stderr=subprocess.PIPE, text=text)
        try:
            stdout, stderr = child.communicate(input, timeout)
        except subprocess.TimeoutExpired as exc:
            child.kill()
            exc.stdout, exc.stderr = child.communicate()  # what it wrote before, as run gives
            raise
        return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)

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

    import convergence.cli  # noqa: F401 - what main imports: its children find it imported
    from convergence.main import main

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
        message, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 3)
        if not message:
            return  # the test process has gone
        request = json.loads(message)
        pid = posix.fork()
        if pid == 0:
            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
            sock.close()
            _run(main, request, fds)
        for fd in fds:
            os.close(fd)
        sock.sendall(json.dumps({"pid": pid}).encode())


def _new_stdio() -> None:
    """New ``sys.stdin``, ``stdout`` and ``stderr`` on descriptors 0, 1 and 2, made as the
    interpreter makes them at its start (the fork server's were made for its ``/dev/null``, which
    is seekable, and click wraps ``sys.stdout.buffer`` anew): stdout and stderr unbuffered with
    ``PYTHONUNBUFFERED`` set, else block-buffered (stdout) or line-buffered (stderr, or a tty);
    the encodings stay the fork server's."""
    unbuffered = os.environ.get("PYTHONUNBUFFERED", "") != ""
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        old = getattr(sys, name)
        raw = number > 0 and unbuffered
        binary = open(number, "wb" if number else "rb", buffering=0 if raw else -1, closefd=False)
        stream = io.TextIOWrapper(binary, old.encoding, old.errors, "\n", write_through=raw,
                                  line_buffering=not raw and (number == 2 or os.isatty(number)))
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _run(main, request: dict, fds: list[int]) -> None:
    """In the child: become ``convergence ARGV`` with ``fds`` as its stdin, stdout and stderr, run
    the script's ``main`` (its ``monkey.patch_all()`` finds gevent patched) and end as the
    interpreter ends the script: exit handlers run, status from ``SystemExit``, a traceback and 1
    for an exception, killed by SIGINT for ``KeyboardInterrupt``."""
    import _signal
    import atexit
    import traceback

    code = 1
    try:
        for number, fd in enumerate(fds):
            os.dup2(fd, number)
        for fd in fds:
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _new_stdio()
        sys.argv[:] = [os.path.join(os.path.dirname(sys.executable), "convergence"), *request["argv"]]
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException as exc:  # noqa: BLE001 - what the interpreter prints before exiting
        traceback.print_exc()
        code = -_signal.SIGINT if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        if code == -_signal.SIGINT:
            _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
            os.kill(os.getpid(), _signal.SIGINT)
        os._exit(code)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
