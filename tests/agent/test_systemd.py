"""agent.systemd.SystemdNotifier against a real AF_UNIX datagram socket (a path in a temp dir and
the abstract namespace), the no-socket no-op, and WATCHDOG_USEC / WATCHDOG_PID parsing."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator

import pytest

from agent.systemd import SystemdNotifier


class Receiver:
    """A bound datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(5)

    def recv(self) -> str:
        return self.sock.recv(4096).decode("utf-8")

    def empty(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(5)
        return False


@pytest.fixture()
def path_socket() -> Iterator[tuple[str, Receiver]]:
    # a short folder of its own: AF_UNIX paths are limited to 108 bytes
    folder = tempfile.mkdtemp(prefix="sdn-")
    path = os.path.join(folder, "notify")
    rx = Receiver(path)
    try:
        yield path, rx
    finally:
        rx.sock.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def abstract_socket() -> Iterator[tuple[str, Receiver]]:
    name = f"binwatch-test-{uuid.uuid4().hex}"
    rx = Receiver("\0" + name)
    try:
        yield "@" + name, rx
    finally:
        rx.sock.close()


def test_path_socket_receives_each_message(path_socket: tuple[str, Receiver]) -> None:
    path, rx = path_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready()
    assert rx.recv() == "READY=1"
    assert n.watchdog()
    assert rx.recv() == "WATCHDOG=1"
    assert n.status("2 cameras live")
    assert rx.recv() == "STATUS=2 cameras live"
    assert n.stopping()
    assert rx.recv() == "STOPPING=1"
    assert n.extend_timeout(90)
    assert rx.recv() == "EXTEND_TIMEOUT_USEC=90000000"
    assert rx.empty()


def test_status_rides_along_on_one_line(path_socket: tuple[str, Receiver]) -> None:
    path, rx = path_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert n.ready(status="running\nmodel m1")
    assert rx.recv() == "READY=1\nSTATUS=running model m1"
    assert n.stopping(status="draining the outbox")
    assert rx.recv() == "STOPPING=1\nSTATUS=draining the outbox"


def test_abstract_namespace_socket(abstract_socket: tuple[str, Receiver]) -> None:
    name, rx = abstract_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": name})
    assert n.enabled
    assert n.ready()
    assert rx.recv() == "READY=1"
    assert n.watchdog()
    assert rx.recv() == "WATCHDOG=1"


def test_reads_the_process_environment(
    path_socket: tuple[str, Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, rx = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert SystemdNotifier().ready()
    assert rx.recv() == "READY=1"


@pytest.mark.parametrize("env", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "relative/sock"}])
def test_no_socket_is_a_no_op(env: dict[str, str]) -> None:
    n = SystemdNotifier(env)
    assert not n.enabled
    assert not n.ready()
    assert not n.watchdog()
    assert not n.stopping()
    assert not n.status("x")
    assert not n.extend_timeout(1)


def test_a_send_that_fails_never_raises() -> None:
    gone = os.path.join(tempfile.gettempdir(), f"sdn-missing-{uuid.uuid4().hex}")
    n = SystemdNotifier({"NOTIFY_SOCKET": gone})
    assert n.enabled
    assert not n.ready()
    assert not n.watchdog()
    assert not n.stopping()
    n2 = SystemdNotifier({"NOTIFY_SOCKET": "@" + "x" * 200})  # longer than an AF_UNIX address
    assert not n2.ready()


def test_a_closed_receiver_never_raises(path_socket: tuple[str, Receiver]) -> None:
    path, rx = path_socket
    rx.sock.close()
    os.unlink(path)
    assert not SystemdNotifier({"NOTIFY_SOCKET": path}).watchdog()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000"}, 0.5),
        ({"WATCHDOG_USEC": " 2000000 "}, 2.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "abc"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": ""}, 30.0),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert SystemdNotifier(env).watchdog_interval() == expected


def test_watchdog_interval_does_not_need_the_socket() -> None:
    # systemd sets both, but the interval is parsed on its own (like sd_watchdog_enabled)
    n = SystemdNotifier({"WATCHDOG_USEC": "10000000"})
    assert not n.enabled
    assert n.watchdog_interval() == 10.0
