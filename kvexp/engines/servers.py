"""Starting, probing and stopping engine servers: each in its own process group, never leaked."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from kvexp.engines.base import LaunchSpec
from kvexp.results.records import InstanceHandle


class ServerError(RuntimeError):
    """A server that could not start, died, or did not become ready; the message has its log."""


def error_text(exc: BaseException) -> str:
    """An error for point.json: a ServerError's own message (it says which server and has
    its log), anything else with its type."""
    return str(exc) if isinstance(exc, ServerError) else f"{type(exc).__name__}: {exc}"


class PortTaken(ServerError):
    """The server's port is held by another process."""


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


def port_in_use(host: str, port: int) -> str | None:
    """None if `port` can be bound on `host`, else who holds it (as far as we can tell)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            return None
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return str(exc)
    with contextlib.suppress(psutil.Error, PermissionError):
        for c in psutil.net_connections("inet"):
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
                p = psutil.Process(c.pid)
                return f"pid {c.pid}: {' '.join(p.cmdline())[:120]}"
    return "in use"


def _load_prctl() -> Any:
    """libc's prctl, looked up here in the parent: between fork and exec (where other
    threads' locks may be held) the child only calls it, loading nothing."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


_PRCTL = _load_prctl()
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child, before exec: SIGTERM when the parent dies (Linux), so nothing is orphaned
    even if the parent is SIGKILLed. Does nothing where prctl does not exist."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM))


def exit_reason(code: int | None) -> str:
    """'exited with code 3', or the signal that killed it, with what SIGKILL usually means."""
    if code is None:
        return "is running"
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = (" (SIGKILL: if nobody sent it, the kernel's OOM killer did; see `dmesg`)"
            if -code == signal.SIGKILL else "")
    return f"was killed by {name}{hint}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server:
    """One engine server process (and everything it spawns) with its log file."""

    owned = True  # started (and stopped) by kvexp; an engine's own class may say otherwise

    def __init__(self, spec: LaunchSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._pgid: int | None = None
        self.start_time: float | None = None  # epoch s: process started
        self.ready_time: float | None = None  # epoch s: first healthy answer (wait_ready)

    @property
    def base_url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}"

    def start(self) -> None:
        holder = port_in_use(self.spec.host, self.spec.port)
        if holder:
            raise PortTaken(
                f"{self.spec.name}: port {self.spec.port} on {self.spec.host} is already "
                f"in use ({holder}); free it or set engine.port / instances.<name>.port"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    self.spec.argv,
                    env={**os.environ, **self.spec.env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # own process group: stopped as a whole
                    preexec_fn=die_with_parent,
                )
            except OSError as exc:
                msg = f"{self.spec.name}: cannot run {self.spec.argv[0]}: {exc}"
                raise ServerError(msg) from exc
        self._pgid = self.proc.pid
        self.start_time = time.time()

    def handle(self) -> InstanceHandle:
        return InstanceHandle(
            name=self.spec.name,
            base_url=self.base_url,
            pid=self.proc.pid if self.proc else None,
            ipc_name=self.spec.ipc_name,
            metrics_path=self.spec.metrics_path,
            served_model=self.spec.served_model,
        )

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def died_error(self) -> ServerError:
        return ServerError(
            f"{self.spec.name}: server {exit_reason(self.exit_code())}; "
            f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def probe(self, client: httpx.Client) -> bool:
        try:
            r = client.get(self.base_url + self.spec.health_path, timeout=2.0)
            return r.status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the process group (and strays), SIGKILL after `timeout_s`."""
        if self.proc is None:
            return
        procs = self.members()
        self._signal_group(signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=timeout_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=0.1)
        if alive or self.proc.poll() is None:
            self._signal_group(signal.SIGKILL)
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def members(self) -> list[psutil.Process]:
        """Every live process of the server: its tree, and its process group, whose members
        outlive the root (a server that died leaves its workers orphaned, still holding
        memory)."""
        found: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.proc.pid)  # type: ignore[union-attr]
            found = {p.pid: p for p in (root, *root.children(recursive=True))}
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if p.pid not in found and os.getpgid(p.pid) == self._pgid:
                    found[p.pid] = p
        return [p for p in found.values() if p.status() != psutil.STATUS_ZOMBIE]

    def _signal_group(self, sig: int) -> None:
        if self._pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, sig)


class AttachedServer:
    """A server that another process started and stops (a shared server of the sweep)."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.spec = LaunchSpec(**{k: record[k] for k in LaunchSpec.__dataclass_fields__})
        self.pid: int | None = record.get("pid")
        self.log_path = Path(record["log_path"])

    @property
    def base_url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.port}"

    def handle(self) -> InstanceHandle:
        return InstanceHandle(self.spec.name, self.base_url, self.pid, self.spec.ipc_name,
                              self.spec.metrics_path, self.spec.served_model)

    def exit_code(self) -> int | None:
        """None while it runs, else -1 (its exit code belongs to the process that started it)."""
        try:
            alive = psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except (psutil.Error, TypeError, ValueError):
            alive = False
        return None if alive else -1

    def died_error(self) -> ServerError:
        return ServerError(f"{self.spec.name}: shared server (pid {self.pid}) is gone; "
                           f"last lines of {self.log_path}:\n{log_tail(self.log_path)}")

    def stop(self, timeout_s: float = 20.0) -> None:
        """Nothing: the process that started it stops it."""


def wait_ready(servers: list[Server], timeout_s: float) -> None:
    """Poll every server's health until all answer 200; fail fast if one exits."""
    deadline = time.monotonic() + timeout_s
    pending = list(servers)
    with httpx.Client() as client:
        while pending:
            for s in list(pending):
                if s.exit_code() is not None:
                    raise s.died_error()
                if s.probe(client):
                    s.ready_time = time.time()
                    pending.remove(s)
            if not pending:
                return
            if time.monotonic() > deadline:
                names = ", ".join(s.spec.name for s in pending)
                tails = "\n".join(f"--- {s.log_path}\n{log_tail(s.log_path)}" for s in pending)
                raise ServerError(f"not ready after {timeout_s:.0f} s: {names}\n{tails}")
            time.sleep(0.5)
