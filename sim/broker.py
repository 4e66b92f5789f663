"""A local mosquitto for tests, benchmarks and ``bodycam sim --local-broker``.

It listens on loopback only, keeps its retained messages in its work directory (so they
survive :meth:`LocalMosquitto.restart`), logs to a file there, and can be stopped
politely (SIGTERM), killed (SIGKILL) or restarted on the same port, which is what the
reconnect and last-will tests need.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

__all__ = ["LocalMosquitto", "MosquittoError", "find_mosquitto"]

HOST = "127.0.0.1"
_FALLBACK = Path("/usr/sbin/mosquitto")  # Debian puts the broker in sbin, often off PATH


class MosquittoError(RuntimeError):
    """mosquitto is missing, did not start, or did not stop."""


def find_mosquitto() -> Path:
    """The mosquitto executable; ``MosquittoError`` saying how to install it if missing."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    if _FALLBACK.is_file() and os.access(_FALLBACK, os.X_OK):
        return _FALLBACK
    raise MosquittoError(
        "mosquitto is not installed: `./dev test` installs it "
        "(the Debian/Ubuntu package is `mosquitto`: apt-get install mosquitto)"
    )


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalMosquitto:
    """One mosquitto process on ``127.0.0.1``, configured and owned by this object.

    Args:
        workdir: Holds ``mosquitto.conf``, the persistence file and the log.
        port: Listen here; None picks a free port at the first :meth:`start`.
        config_extra: Lines appended after the listener line: TLS files (``certfile``,
            ``keyfile``, ``cafile``, ``require_certificate``) then apply to the listener;
            ``password_file``/``acl_file`` to the broker. Mentioning ``allow_anonymous``
            replaces the default ``allow_anonymous true``.
    """

    def __init__(self, workdir: Path, *, port: int | None = None, config_extra: str = "") -> None:
        self.workdir = Path(workdir)
        self._port = port
        self.config_extra = config_extra
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    # ----- facts ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (chosen at the first start when not given)."""
        if self._port is None:
            raise MosquittoError("the port is chosen when the broker starts: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>`` (build ``mqtts://`` yourself for a TLS listener)."""
        return f"mqtt://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The running broker's process id, or None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def conf_path(self) -> Path:
        """The configuration written by :meth:`start`."""
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        """mosquitto's own log (connections, refusals, TLS errors)."""
        return self.workdir / "mosquitto.log"

    def log_text(self) -> str:
        """The log and anything mosquitto wrote to stderr, for failure messages."""
        parts = []
        for path in (self.log_path, self.workdir / "mosquitto.stderr"):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(p for p in parts if p.strip())

    # ----- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Write the configuration, start mosquitto and wait until its port accepts."""
        if self.running:
            return
        exe = find_mosquitto()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._port is None:
            self._port = free_port()
        self.conf_path.write_text(self._config(), encoding="utf-8")
        self._stderr = (self.workdir / "mosquitto.stderr").open("ab")
        self._proc = subprocess.Popen(  # noqa: S603 - our own executable and config
            [str(exe), "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            cwd=self.workdir,
        )
        self._raise_fd_limit()
        try:
            self._wait_listening(timeout)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its retained messages) and wait; SIGKILL if it hangs."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as in a crash (unsaved retained messages are lost)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self._reap()

    def restart(self, timeout: float = 10.0) -> None:
        """Stop and start again on the same port, with the same persistence file."""
        self.stop()
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----- inside ---------------------------------------------------------------------------

    def _config(self) -> str:
        lines = [
            "# Written by bodycam.sim.broker.LocalMosquitto: a throwaway loopback broker.",
            "persistence true",
            f"persistence_location {self.workdir}/",
            # Save retained messages soon after they change too, not only at shutdown.
            "autosave_interval 5",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "set_tcp_nodelay true",
            "log_timestamp_format %H:%M:%S",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to the `mosquitto` user, which cannot write
            # in this work directory; naming root keeps it as it was started.
            lines.append(f"user {pwd.getpwuid(0).pw_name}")
        lines.append(f"listener {self.port} {HOST}")
        if self.config_extra.strip():
            lines.append(self.config_extra.strip())
        if "allow_anonymous" not in self.config_extra:
            lines.append("allow_anonymous true")
        return "\n".join(lines) + "\n"

    def _raise_fd_limit(self) -> None:
        # A fleet simulation opens thousands of connections: lift the broker's soft limit
        # on open files to the hard limit (Linux; elsewhere it keeps what it inherited).
        if self._proc is None or not hasattr(resource, "prlimit"):
            return
        with contextlib.suppress(OSError, ValueError):
            _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.prlimit(self._proc.pid, resource.RLIMIT_NOFILE, (hard, hard))

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise MosquittoError(
                    f"mosquitto exited (code {code}) before listening on {HOST}:{self._port}; "
                    f"config {self.conf_path}; its output:\n{self.log_text()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((HOST, self.port), timeout=0.2),
            ):
                return
            if time.monotonic() > deadline:
                raise MosquittoError(
                    f"mosquitto did not listen on {HOST}:{self._port} within {timeout} s; "
                    f"its output:\n{self.log_text()}"
                )
            time.sleep(0.02)

    def _reap(self) -> None:
        self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
