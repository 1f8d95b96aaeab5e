"""Server processes: every process a server started is stopped, even after the server died."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kvexp.engines.base import LaunchSpec
from kvexp.engines.servers import Server, ServerError, free_port

# A "server" that starts a worker ignoring SIGTERM, then dies: the worker is orphaned.
DIES_LEAVING_A_STUBBORN_WORKER = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
    "time.sleep(0.5)\n"
    "sys.exit(3)\n"
)


def spec(code: str, port: int) -> LaunchSpec:
    return LaunchSpec(name="s", argv=[sys.executable, "-c", code], env={}, host="127.0.0.1",
                      port=port, served_model="m")


def test_a_dead_servers_orphaned_workers_are_killed(tmp_path: Path) -> None:
    server = Server(spec(DIES_LEAVING_A_STUBBORN_WORKER, free_port()), tmp_path / "s.log")
    server.start()
    deadline = time.monotonic() + 10
    while server.exit_code() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.exit_code() == 3
    orphans = server.members()
    assert len(orphans) == 1  # the worker, outside the dead root's tree
    server.stop(timeout_s=1)
    assert not psutil.pid_exists(orphans[0].pid) or (
        psutil.Process(orphans[0].pid).status() == psutil.STATUS_ZOMBIE)
    assert server.members() == []


def test_a_port_in_use_is_refused_with_its_holder(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        server = Server(spec("pass", s.getsockname()[1]), tmp_path / "s.log")
        with pytest.raises(ServerError, match="already in use"):
            server.start()


def test_a_picked_port_taken_meanwhile_is_picked_again(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from kvexp.config import resolve_instances
    from kvexp.engines import launch
    from tests.test_server_reuse import _conf

    cfg = _conf("engine=sim", "model=tiny", "engine.sim.gpu=tiny", "engine.sim.startup_s=0")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        picks = iter([taken.getsockname()[1], free_port()])
        monkeypatch.setattr(launch, "free_port", lambda host: next(picks))
        started: list[Server] = []
        try:
            launch.start_servers(cfg, resolve_instances(cfg), tmp_path, started)
            assert len(started) == 1 and started[0].spec.port != taken.getsockname()[1]
        finally:
            for s in started:
                s.stop(5)


def test_a_server_killed_by_sigkill_says_what_usually_does_that(tmp_path: Path) -> None:
    server = Server(spec("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                         free_port()), tmp_path / "log")
    server.start()
    server.proc.wait(timeout=10)  # type: ignore[union-attr]
    msg = str(server.died_error())
    assert "killed by SIGKILL" in msg and "OOM killer" in msg


def test_a_server_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """The parent is SIGKILLed (no clean-up at all): its server still gets SIGTERM."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from kvexp.engines.base import LaunchSpec\n"
        "from kvexp.engines.servers import Server\n"
        "spec = LaunchSpec('s', [sys.executable, '-c', 'import time; time.sleep(120)'], {},\n"
        "                  '127.0.0.1', 1, 'm')\n"
        f"s = Server(spec, Path({str(tmp_path / 'log')!r}))\n"
        "s.start()\n"
        "print(s.proc.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))  # type: ignore[union-attr]
    parent.kill()
    parent.wait()
    child.wait(timeout=10)  # raises TimeoutExpired if it outlived its parent
