"""The notify protocol reaches a real datagram socket, abstract or not."""

import os
import socket
from pathlib import Path

import pytest

from bodycam.daemon.notify import SystemdNotifier


def _listen(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(5)
    return sock


def test_ready_watchdog_stopping_arrive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify")
    with _listen(path) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.setenv("WATCHDOG_USEC", "4000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        notifier = SystemdNotifier.from_environment()
        assert notifier is not None
        assert notifier.watchdog_interval_s == 4.0
        notifier.ready("recording ready")
        notifier.watchdog()
        notifier.stopping()
        notifier.close()
        got = [server.recv(4096) for _ in range(3)]
    assert got == [b"READY=1\nSTATUS=recording ready", b"WATCHDOG=1", b"STOPPING=1"]


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"bodycam-test-{os.getpid()}"
    with _listen("\0" + name) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        notifier = SystemdNotifier.from_environment()
        assert notifier is not None
        assert notifier.watchdog_interval_s is None
        notifier.ready()
        notifier.close()
        assert server.recv(4096) == b"READY=1"


def test_watchdog_for_another_pid_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    notifier = SystemdNotifier.from_environment()
    assert notifier is not None
    assert notifier.watchdog_interval_s is None
    assert notifier.send(READY="1") is False  # no listener: reported, not raised
    notifier.close()


def test_no_socket_no_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert SystemdNotifier.from_environment() is None
