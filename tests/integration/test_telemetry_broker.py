"""The telemetry publisher against a real mosquitto started by the test.

Each test owns its broker (a free loopback port, a throwaway directory), so the broker
can be stopped, killed and restarted under the publisher. What is checked is what a
force's dashboard relies on: retained state, ordered events, the last will of a killed
camera, no loss across a broker outage, the drop policy, TLS and the example ACL.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from bodycam.daemon.telemetry import CameraTopics, Telemetry
from bodycam.daemon.telemetry.payloads import decode_event, decode_state
from bodycam.sim.broker import LocalMosquitto, MosquittoError, free_port
from tests.mqtt_fixtures import (
    Subscription,
    broker,
    collect,
    eventually,
    fast_settings,
    mqtt_client,
    retained,
    subscribed,
)
from tests.telemetry_helpers.certs import CertFiles, TestCA

__all__ = ["broker"]  # the fixture, imported for pytest

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


@contextlib.asynccontextmanager
async def running(telemetry: Telemetry) -> AsyncIterator[asyncio.Task[None]]:
    """Run the publisher as a task; on exit cancel it and check it stopped cleanly, in time."""
    task = asyncio.create_task(telemetry.run(), name="telemetry-under-test")
    try:
        yield task
        assert not task.done(), "run() ended on its own"
    finally:
        started = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        telemetry.close()
        assert time.monotonic() - started < 2.5, "stopping took longer than the ~2 s bound"
    assert task.cancelled()


def _events(messages: list[aiomqtt.Message]) -> list[tuple[int, str, dict[str, object]]]:
    out = []
    for m in messages:
        e = decode_event(bytes(m.payload))
        out.append((e.seq, e.kind, e.data))
    return out


# ----- state, events, last will -----------------------------------------------------------


async def test_state_is_retained_for_a_late_subscriber(broker: LocalMosquitto) -> None:
    topics = CameraTopics("CAM-STATE")
    telemetry = Telemetry(fast_settings(broker.url, "CAM-STATE"), topics)
    telemetry.set_state({"state": "IDLE", "battery_percent": 90})
    async with running(telemetry):
        assert await eventually(lambda: telemetry.stats.published >= 2)  # online, state
        before = telemetry.stats.published
        for battery in (89, 88, 87, 86):  # changes within a second are coalesced
            telemetry.set_state({"state": "RECORDING", "battery_percent": battery})
        assert await eventually(lambda: telemetry.stats.published > before, 3)
        await asyncio.sleep(0.3)
        assert telemetry.stats.published == before + 1
        # A dashboard that connects only now still learns everything.
        got = {str(m.topic): m for m in await collect(broker.url, f"{topics.root}/#", 2)}
        assert got[topics.online].retain
        assert got[topics.online].payload == b"1"
        assert got[topics.state].retain
        state = decode_state(bytes(got[topics.state].payload))
        assert state.state == {"state": "RECORDING", "battery_percent": 86}
        assert telemetry.stats.connected
    # A clean stop says so: online=0, retained.
    assert await retained(broker.url, topics.online) == b"0"
    assert await retained(broker.url, topics.state) is not None


async def test_unchanged_state_is_republished_every_interval(broker: LocalMosquitto) -> None:
    topics = CameraTopics("CAM-INTERVAL")
    settings = fast_settings(broker.url, "CAM-INTERVAL", state_interval_s=1.0)
    telemetry = Telemetry(settings, topics)
    telemetry.set_state({"state": "IDLE"})
    async with subscribed(broker.url, topics.state) as sub, running(telemetry):
        got = await sub.take(3, 4)
    states = [decode_state(bytes(m.payload)) for m in got]
    assert len(states) == 3
    assert [s.state for s in states] == [{"state": "IDLE"}] * 3
    assert states[0].seq < states[1].seq < states[2].seq
    assert 0.8 < (states[2].t - states[1].t).total_seconds() < 2.5


async def test_events_arrive_in_order_with_increasing_seq(broker: LocalMosquitto) -> None:
    topics = CameraTopics("CAM-EVENTS")
    telemetry = Telemetry(fast_settings(broker.url, "CAM-EVENTS"), topics)
    async with subscribed(broker.url, topics.event) as sub, running(telemetry):
        for i in range(300):
            telemetry.event("tick", {"i": i}, critical=i % 3 != 0)
        got = _events(await sub.take(300, 10))
        assert await eventually(lambda: telemetry.stats.queued == 0)
    assert [data["i"] for _seq, _kind, data in got] == list(range(300))
    seqs = [seq for seq, _kind, _data in got]
    assert all(a < b for a, b in itertools.pairwise(seqs))
    stats = telemetry.stats
    assert stats.delivered_events == 300
    assert stats.dropped == {}
    assert stats.reconnects == 0


async def test_last_will_marks_a_killed_publisher_offline(broker: LocalMosquitto) -> None:
    keepalive_s = 2
    topics = CameraTopics("CAM-KILLED")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.telemetry_helpers.publisher_proc",
        broker.url,
        "CAM-KILLED",
        str(keepalive_s),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert line.strip() == b"connected"
        async with subscribed(broker.url, topics.online) as sub:
            first = await sub.take(1, 2)
            assert [bytes(m.payload) for m in first] == [b"1"]
            killed = time.monotonic()
            proc.send_signal(signal.SIGKILL)  # no DISCONNECT, no goodbye: only the will
            got = await sub.take(1, keepalive_s * 1.5)
            elapsed = time.monotonic() - killed
        assert [bytes(m.payload) for m in got] == [b"0"], f"no will within {elapsed:.1f} s"
        assert elapsed <= keepalive_s * 1.5
        assert await retained(broker.url, topics.online) == b"0"
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


# ----- outages: queueing, reconnecting, dropping ------------------------------------------


async def test_backlog_drains_in_order_after_broker_restart(
    broker: LocalMosquitto, tmp_path: Path
) -> None:
    topics = CameraTopics("CAM-OUTAGE")
    # A persistent subscriber session: the broker keeps its subscription across the restart
    # and holds what arrives for it, so no message can slip by unseen.
    watcher = {"identifier": "test-outage-watcher", "clean_session": False}
    async with mqtt_client(broker.url, **watcher) as client:
        await client.subscribe(topics.event, qos=1)
    settings = fast_settings(broker.url, "CAM-OUTAGE", queue_path=tmp_path / "q.sqlite")
    telemetry = Telemetry(settings, topics)
    async with running(telemetry):
        assert await eventually(lambda: telemetry.stats.connected)
        broker.stop()
        assert await eventually(lambda: not telemetry.stats.connected)
        for i in range(100):
            telemetry.event("offline_event", {"i": i}, critical=i % 2 == 0)
        assert telemetry.stats.queued == 100
        assert await eventually(lambda: telemetry.stats.failures.get("refused", 0) >= 2)
        broker.start()
        assert await eventually(lambda: telemetry.stats.queued == 0, 10)
        stats = telemetry.stats
        assert stats.delivered_events == 100
        assert stats.reconnects >= 1
        assert stats.failures["lost"] >= 1
        assert stats.queue_persistent
    async with mqtt_client(broker.url, **watcher) as client:
        got = _events(await Subscription(client).take(100, 5))
    assert [data["i"] for _seq, _kind, data in got] == list(range(100))


async def test_broker_vanishing_mid_publish_loses_nothing(broker: LocalMosquitto) -> None:
    topics = CameraTopics("CAM-VANISH")
    settings = fast_settings(broker.url, "CAM-VANISH", queue_max=50_000)
    telemetry = Telemetry(settings, topics)
    for i in range(5_000):
        telemetry.event("burst", {"i": i})
    async with running(telemetry) as task:
        assert await eventually(lambda: telemetry.stats.delivered_events > 200, 5, 0.001)
        broker.kill()  # SIGKILL while publishes wait for their acknowledgements
        assert await eventually(lambda: not telemetry.stats.connected)
        assert 0 < telemetry.stats.queued < 5_000
        broker.start()
        assert await eventually(lambda: telemetry.stats.queued == 0, 15)
        assert not task.done()
    stats = telemetry.stats
    assert stats.delivered_events == 5_000
    assert stats.failures.get("lost", 0) >= 1


async def test_broker_down_at_start_keeps_retrying_and_never_blocks(tmp_path: Path) -> None:
    down = LocalMosquitto(tmp_path / "mosquitto", port=free_port())  # nothing listens yet
    url = f"mqtt://127.0.0.1:{down.port}"
    settings = fast_settings(url, "CAM-DOWN", queue_path=tmp_path / "q.sqlite")
    telemetry = Telemetry(settings, CameraTopics("CAM-DOWN"))
    try:
        async with running(telemetry):
            worst = 0.0
            for i in range(500):
                started = time.perf_counter()
                telemetry.event("while_down", {"i": i})
                telemetry.set_state({"i": i})
                worst = max(worst, time.perf_counter() - started)
            # Microseconds when idle; the bound leaves room for a loaded test machine. A call
            # that waited on the network would take seconds.
            assert worst < 0.05, f"a call took {worst * 1000:.1f} ms"
            assert await eventually(lambda: telemetry.stats.failures.get("refused", 0) >= 3)
            assert not telemetry.stats.connected
            assert telemetry.stats.last_error is not None
            assert "refused" in telemetry.stats.last_error
            down.start()
            assert await eventually(lambda: telemetry.stats.delivered_events == 500, 10)
    finally:
        down.stop()


async def test_full_queue_drops_oldest_noncritical_and_counts(broker: LocalMosquitto) -> None:
    topics = CameraTopics("CAM-FULL")
    telemetry = Telemetry(fast_settings(broker.url, "CAM-FULL", queue_max=5), topics)
    # Queued before run(): as good as an unreachable broker.
    for kind in ("c0", "n1", "c2", "n3", "c4", "n5", "c6"):
        telemetry.event(kind, critical=kind.startswith("c"))
    assert telemetry.stats.queued == 5
    assert telemetry.stats.dropped == {"n1": 1, "n3": 1}
    async with subscribed(broker.url, topics.event) as sub, running(telemetry):
        got = _events(await sub.take(5, 5))
    assert [kind for _seq, kind, _data in got] == ["c0", "c2", "c4", "n5", "c6"]


async def test_refused_credentials_are_counted_not_raised(tmp_path: Path) -> None:
    with LocalMosquitto(tmp_path / "mosquitto", config_extra="allow_anonymous false") as locked:
        telemetry = Telemetry(fast_settings(locked.url, "CAM-AUTH"), CameraTopics("CAM-AUTH"))
        telemetry.event("queued_meanwhile")
        async with running(telemetry):
            assert await eventually(lambda: telemetry.stats.failures.get("auth", 0) >= 2)
            assert not telemetry.stats.connected
            assert telemetry.stats.queued == 1


# ----- TLS and the example broker configuration -------------------------------------------


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[LocalMosquitto, TestCA]]:
    ca = TestCA(tmp_path / "pki", "bodycam test broker CA")
    server = ca.issue("localhost", server=True)
    extra = f"certfile {server.cert}\nkeyfile {server.key}"
    with LocalMosquitto(tmp_path / "mosquitto", config_extra=extra) as running_broker:
        yield running_broker, ca


async def test_tls_with_the_brokers_ca_connects(tls_broker: tuple[LocalMosquitto, TestCA]) -> None:
    mosquitto, ca = tls_broker
    url = f"mqtts://127.0.0.1:{mosquitto.port}"
    topics = CameraTopics("CAM-TLS")
    telemetry = Telemetry(fast_settings(url, "CAM-TLS", ca_file=ca.cert_file), topics)
    telemetry.set_state({"state": "IDLE"})
    async with running(telemetry):
        assert await eventually(lambda: telemetry.stats.published >= 2)
        tls = aiomqtt.TLSParameters(ca_certs=str(ca.cert_file))
        state = await retained(url, topics.state, tls_params=tls)
    assert state is not None
    assert decode_state(state).state == {"state": "IDLE"}
    assert telemetry.stats.failures == {}


# paho leaves the socket of a failed TLS handshake for the garbage collector to close (with
# a ResourceWarning); the test collects it itself, so the warning lands here, ignored.
@pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)
async def test_tls_with_a_wrong_ca_is_refused_and_counted(
    tls_broker: tuple[LocalMosquitto, TestCA], tmp_path: Path
) -> None:
    mosquitto, _ca = tls_broker
    wrong = TestCA(tmp_path / "other-pki", "someone else's CA")
    url = f"mqtts://127.0.0.1:{mosquitto.port}"
    telemetry = Telemetry(
        fast_settings(url, "CAM-WRONG-CA", ca_file=wrong.cert_file), CameraTopics("CAM-WRONG-CA")
    )
    async with running(telemetry):
        assert await eventually(lambda: telemetry.stats.failures.get("tls", 0) >= 2)
        assert not telemetry.stats.connected
        assert telemetry.stats.last_error is not None
        assert "certificate" in telemetry.stats.last_error.lower()
    gc.collect()


_KEEP = (
    "certfile",
    "keyfile",
    "cafile",
    "require_certificate",
    "use_identity_as_username",
    "allow_anonymous",
    "acl_file",
)


def _example_config(ca: TestCA, server: CertFiles, acl: Path) -> str:
    """The documented broker config with its placeholder paths pointed at the test's files."""
    files = {
        "broker.crt": server.cert,
        "broker.key": server.key,
        "device-ca.crt": ca.cert_file,
        "bodycam.acl": acl,
    }
    lines = []
    for line in (DOCS / "mosquitto-example.conf").read_text().splitlines():
        if line.split(" ", 1)[0] not in _KEEP:
            continue  # the listener comes from LocalMosquitto; logging and sizing stay out
        lines.append(re.sub(r"/etc/mosquitto/bodycam/(\S+)", lambda m: str(files[m[1]]), line))
    assert len(lines) == len(_KEEP), lines
    return "\n".join(lines)


async def test_example_acl_confines_each_camera_to_its_own_topics(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki", "force device CA")
    server = ca.issue("localhost", server=True)
    acl = tmp_path / "bodycam.acl"
    acl.write_text((DOCS / "mosquitto-example.acl").read_text())

    def tls(cert: CertFiles) -> aiomqtt.TLSParameters:
        return aiomqtt.TLSParameters(
            ca_certs=str(ca.cert_file), certfile=str(cert.cert), keyfile=str(cert.key)
        )

    cam_a, cam_b = CameraTopics("CAM-A"), CameraTopics("CAM-B")
    a_cert, monitor_cert = ca.issue("CAM-A"), ca.issue("ops:monitor")
    config = _example_config(ca, server, acl)
    with LocalMosquitto(tmp_path / "mosquitto", config_extra=config) as mosquitto:
        url = f"mqtts://127.0.0.1:{mosquitto.port}"
        async with subscribed(url, "bodycam/v1/#", tls_params=tls(monitor_cert)) as monitor:
            # The real publisher, with its device certificate: its will topic is allowed.
            settings = fast_settings(
                url, "CAM-A", ca_file=ca.cert_file, cert_file=a_cert.cert, key_file=a_cert.key
            )
            telemetry = Telemetry(settings, cam_a)
            async with running(telemetry):
                online = await monitor.take(1, 5)
                assert [(str(m.topic), bytes(m.payload)) for m in online] == [(cam_a.online, b"1")]
            # The monitor may read but not write; camera A may write only below its own id.
            async with mqtt_client(
                url, identifier="ops:monitor", tls_params=tls(monitor_cert)
            ) as ops:
                await ops.publish(cam_a.event, b"forged by the monitor", qos=1)
            async with mqtt_client(url, identifier="CAM-A", tls_params=tls(a_cert)) as camera:
                await camera.publish(cam_b.event, b"forged for camera B", qos=1)
                await camera.publish(cam_b.state, b"forged state", qos=1, retain=True)
                await camera.publish(cam_a.event, b"genuine", qos=1)
            got = await monitor.take_until(lambda m: m.payload == b"genuine", 5)
        # Published in this order on one connection each: had a forgery gone through, it
        # would have arrived before the genuine message.
        assert [(str(m.topic), bytes(m.payload)) for m in got] == [
            (cam_a.online, b"0"),
            (cam_a.event, b"genuine"),
        ]
        # Without a certificate from the device CA, nobody gets in.
        intruder = Telemetry(fast_settings(url, "CAM-B", ca_file=ca.cert_file), cam_b)
        async with running(intruder):
            assert await eventually(lambda: intruder.stats.failures.get("tls", 0) >= 2)
            assert not intruder.stats.connected
            assert intruder.stats.last_error is not None
            assert "certificate" in intruder.stats.last_error


# ----- the local broker itself ------------------------------------------------------------


async def test_local_broker_keeps_retained_messages_across_restart(broker: LocalMosquitto) -> None:
    async with mqtt_client(broker.url) as client:
        await client.publish("bodycam/v1/camera/CAM-R/state", b"kept", qos=1, retain=True)
    port = broker.port
    broker.restart()
    assert broker.port == port
    assert await retained(broker.url, "bodycam/v1/camera/CAM-R/state") == b"kept"


def test_missing_mosquitto_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("shutil.which", lambda _name: None)
    monkeypatch.setattr("bodycam.sim.broker._FALLBACK", tmp_path / "no-mosquitto")
    with pytest.raises(MosquittoError, match=r"\./dev test"):
        LocalMosquitto(tmp_path / "mosquitto").start()


def test_broker_that_cannot_start_shows_its_error(tmp_path: Path) -> None:
    bad = LocalMosquitto(tmp_path / "mosquitto", config_extra="no_such_option 1")
    with pytest.raises(MosquittoError, match="no_such_option"):
        bad.start()
    assert not bad.running
