"""The largest fleet this machine simulates against a local mosquitto, latency under 1 s.

Figure (issue: fleet): the largest fleet with p99 publish-to-delivery under 1 s and no
loss, against a target of 22,000 cameras (one state every 10 s each, plus events), with
messages/s, fleet CPU seconds per camera-minute and RSS per camera.

How: for each size, a fresh mosquitto; a probe subscribes (QoS 1) to every camera's state,
event and online topics before the fleet starts; the fleet runs at speed 1 as
``python -m bodycam.sim.fleet`` in ``SHARDS`` processes (``--shard I/N``). Once every camera
is online the probe measures for ``WINDOW_S``: latency is receipt time minus the payload's
``t`` (stamped by the publisher when it sends; one machine, one clock). Loss: per camera,
every sequence number up to the last one sent inside the window must have arrived (states
and events share one counter, so an event dropped from a queue leaves a hole), and the
fleet must report nothing dropped. Sizes ramp up and stop at the first miss or at the time budget.
Baseline in the same run: the same measurement for 50 cameras; p99 is printed as a ratio
to it, the largest passing size as a ratio to the target.

Run: ``./dev bench fleet`` (``BODYCAM_BENCH_FLEET_SIZES=1000,5000`` to choose sizes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import percentile
from bodycam.daemon.telemetry import parse_broker_url, topics
from bodycam.sim.broker import LocalMosquitto

TARGET = 22_000
BASELINE = 50
SIZES = [1_000, 2_000, 5_000, 10_000, 22_000]
# Fleet processes. Measured here at 19,900 cameras on 2 cores: 2 shards gave p50 150 ms and
# p99 1.2 s (each loop's iterations grow long with ~10,000 connections), 4 shards p50 2 ms
# and p99 0.19 s for about the same CPU.
SHARDS = int(os.environ.get("BODYCAM_BENCH_FLEET_SHARDS", "4"))
WINDOW_S = 30.0
SETTLE_S = 5.0
CONNECT_RATE = 500.0
BUDGET_S = 540.0
P99_LIMIT_S = 1.0
# The probe must not be the bottleneck: mosquitto's default 1000 queued messages per
# subscriber would drop messages whenever the probe falls behind for a moment.
BROKER_CONF = "max_queued_messages 1000000\nset_tcp_nodelay true"
SCENARIO = """
name = "bench"
shift_hours = 10
start_window_minutes = 0.5
incidents_per_hour = 2
monitor_s = 60
[config.telemetry]
state_interval_s = 10
keepalive_s = 60
"""
_TICK = os.sysconf("SC_CLK_TCK")
# Descriptors mosquitto needs besides the cameras': listener, log, persistence, the probe.
_BROKER_SPARE = 100


class Probe:
    """The dashboard's stand-in: paho in its own thread stamps and stores every message.

    QoS 1, so the broker may not drop any; decoding waits until the fleet has stopped, so
    the probe takes as little CPU from the fleet as it can.
    """

    def __init__(self, url: str) -> None:
        address = parse_broker_url(url)
        self.online: set[str] = set()
        self.received: list[tuple[str, bytes, float]] = []
        self.subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-probe", clean_session=True
        )
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect(address.host, address.port, keepalive=60)
        self._client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_args: Any) -> None:
        wanted = (topics.CAMERA_ONLINE, topics.CAMERA_STATES, topics.CAMERA_EVENTS)
        client.subscribe([(topic, 1) for topic in wanted])

    def _on_subscribe(self, *_args: Any) -> None:
        self.subscribed.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if msg.topic.endswith("/online"):
            if msg.payload == b"1":
                self.online.add(msg.topic.split("/")[3])
            return
        self.received.append((msg.topic, bytes(msg.payload), now))

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def analyse(self, window: tuple[float, float]) -> tuple[list[float], int, int]:
        """State latencies sent in ``window``, messages sent in it, and lost messages."""
        start, end = window
        latencies: list[float] = []
        in_window = 0
        seqs: defaultdict[str, dict[int, float]] = defaultdict(dict)
        for topic, payload, arrived in self.received:
            doc = json.loads(payload)
            sent = datetime.fromisoformat(doc["t"]).timestamp()
            seqs[topic.split("/")[3]][doc["seq"]] = sent
            if start <= sent <= end:
                in_window += 1
                if topic.endswith("/state"):
                    latencies.append(arrived - sent)
        lost = 0
        for seen in seqs.values():
            # Everything numbered up to the last message sent inside the window must be here.
            last = max((seq for seq, sent in seen.items() if sent <= end), default=0)
            lost += sum(1 for seq in range(1, last + 1) if seq not in seen)
        return latencies, in_window, lost


@dataclass
class Result:
    cameras: int
    online: int
    p50_s: float
    p99_s: float
    messages_per_s: float
    lost: int
    dropped: int
    cpu_per_camera_minute: float
    rss_kib_per_camera: float
    broker_cpu_share: float
    probe_cpu_share: float
    note: str = ""

    @property
    def passed(self) -> bool:
        lossless = self.online == self.cameras and self.lost == 0 and self.dropped == 0
        return lossless and self.p99_s < P99_LIMIT_S


def _cpu_s(pid: int | None) -> float:
    """CPU seconds of process ``pid`` (None: this process, the probe's thread included)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


async def _fleet_process(
    url: str, cameras: int, shard: int, tmp: Path, limit_s: float
) -> asyncio.subprocess.Process:
    scenario = tmp / "bench-fleet.toml"
    scenario.write_text(SCENARIO)
    args = [
        "-m", "bodycam.sim.fleet", "--cameras", str(cameras), "--broker", url,
        "--shard", f"{shard}/{SHARDS}", "--scenario", str(scenario), "--speed", "1",
        "--duration", f"{limit_s:.0f}", "--connect-rate", f"{CONNECT_RATE / SHARDS:g}",
        "--no-view", "--json",
    ]  # fmt: skip
    # stderr to a file: a process whose pipe nobody drains would block on its next warning.
    with (tmp / "fleet.log").open("ab") as err:
        return await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=err
        )


async def measure(cameras: int, tmp: Path) -> Result:
    """One fleet size on a fresh broker; see the module docstring."""
    ramp_s = cameras / CONNECT_RATE * 2 + 30
    procs: list[asyncio.subprocess.Process] = []
    with LocalMosquitto(tmp / f"broker-{cameras}", config_extra=BROKER_CONF) as broker:
        probe = Probe(broker.url)
        try:
            if not await asyncio.to_thread(probe.subscribed.wait, 10):
                raise RuntimeError("the probe could not subscribe")
            limit = ramp_s + SETTLE_S + WINDOW_S + 60
            for shard in range(min(SHARDS, cameras)):
                procs.append(await _fleet_process(broker.url, cameras, shard, tmp, limit))
            deadline = time.monotonic() + ramp_s
            while len(probe.online) < cameras and time.monotonic() < deadline:
                if any(p.returncode is not None for p in procs):
                    break
                await asyncio.sleep(0.5)
            note = "" if len(probe.online) == cameras else f"{len(probe.online)} online"
            await asyncio.sleep(SETTLE_S)
            pids = [p.pid for p in procs]
            cpu0, broker0, own0 = sum(map(_cpu_s, pids)), _cpu_s(broker.pid), _cpu_s(None)
            t0, window = time.monotonic(), (time.time(), time.time() + WINDOW_S)
            await asyncio.sleep(WINDOW_S)
            cpu1, broker1, own1 = sum(map(_cpu_s, pids)), _cpu_s(broker.pid), _cpu_s(None)
            elapsed = time.monotonic() - t0
            rss = sum(map(_rss_kib, pids))
            online = len(probe.online)
            dropped, problems = await _stop_fleet(procs, tmp / "fleet.log")
            await asyncio.sleep(2.0)  # what is still in flight reaches the probe
        finally:
            probe.close()
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    latencies, in_window, lost = probe.analyse(window)
    return Result(
        cameras=cameras,
        online=online,
        p50_s=percentile(latencies, 50),
        p99_s=percentile(latencies, 99),
        messages_per_s=in_window / WINDOW_S,
        lost=lost,
        dropped=dropped,
        cpu_per_camera_minute=(cpu1 - cpu0) / (cameras * elapsed / 60),
        rss_kib_per_camera=rss / cameras,
        broker_cpu_share=(broker1 - broker0) / elapsed,
        probe_cpu_share=(own1 - own0) / elapsed,
        note=f"{note} {problems}".strip(),
    )


async def _stop_fleet(procs: list[asyncio.subprocess.Process], log: Path) -> tuple[int, str]:
    """SIGINT every fleet process; the events they dropped, and anything that went wrong."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
    dropped, problems = 0, ""
    outputs = await asyncio.gather(*(proc.communicate() for proc in procs))
    for proc, (out, _err) in zip(procs, outputs, strict=True):
        try:
            totals: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        except (IndexError, ValueError):
            text = await asyncio.to_thread(log.read_text, errors="replace")
            problems += f" fleet exited {proc.returncode} without totals: {text[-200:]!r}"
            dropped += 1
            continue
        dropped += int(totals["dropped"])
        if totals["errors"] or totals["reconnects"]:
            problems += f" failures {totals['errors']}, reconnects {totals['reconnects']}"
        if totals["max_lag_s"] > P99_LIMIT_S:
            problems += f" scheduler lag {totals['max_lag_s']:.1f} s"
    return dropped, problems


def _row(r: Result, baseline: Result) -> str:
    return (
        f"{r.cameras:>7} {r.online:>7} {r.messages_per_s:>8.0f} {r.p50_s * 1000:>8.1f} "
        f"{r.p99_s * 1000:>9.1f} {r.p99_s / max(baseline.p99_s, 1e-6):>8.1f} {r.lost:>5} "
        f"{r.dropped:>5} {r.cpu_per_camera_minute * 1000:>14.2f} "
        f"{r.rss_kib_per_camera:>8.1f} {r.broker_cpu_share * 100:>6.0f}% "
        f"{r.probe_cpu_share * 100:>5.0f}%  "
        f"{'pass' if r.passed else 'MISS'} {r.note}"
    )


def _broker_cap(largest: int) -> int:
    """Connections one mosquitto can hold here: one descriptor each, under the hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = largest + _BROKER_SPARE
    if hard == resource.RLIM_INFINITY or hard >= want:
        return largest
    # LocalMosquitto hands the broker this process's hard limit; only root with
    # CAP_SYS_RESOURCE may raise it.
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, want))
        return largest
    return int(hard) - _BROKER_SPARE


async def run(sizes: list[int]) -> None:
    started = time.monotonic()
    cap = _broker_cap(max(sizes))
    if max(sizes) > cap:
        print(
            f"note: one mosquitto holds one descriptor per camera; the hard RLIMIT_NOFILE "
            f"here allows {cap + _BROKER_SPARE} and cannot be raised (no CAP_SYS_RESOURCE), "
            f"so sizes above {cap} are measured at {cap}"
        )
        sizes = sorted({min(size, cap) for size in sizes})
    print(
        f"fleet benchmark: {SHARDS} fleet process(es), {WINDOW_S:g} s window per size, "
        f"state every 10 s per camera, connect {CONNECT_RATE:g}/s, budget {BUDGET_S:g} s"
    )
    print(
        f"{'cameras':>7} {'online':>7} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>9} "
        f"{'p99/base':>8} {'lost':>5} {'drop':>5} {'CPU ms/cam-min':>14} {'KiB/cam':>8} "
        f"{'broker':>7} {'probe':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="bodycam-bench-fleet-") as tmp:
        baseline = await measure(BASELINE, Path(tmp))
        print(_row(baseline, baseline) + "  (baseline)", flush=True)
        best: Result | None = None
        for size in sizes:
            needed = size / CONNECT_RATE + SETTLE_S + WINDOW_S + 20 + size / 1000
            if time.monotonic() - started + needed > BUDGET_S:
                print(f"{size:>7} skipped: the {BUDGET_S:g} s budget would be exceeded")
                break
            result = await measure(size, Path(tmp))
            print(_row(result, baseline), flush=True)
            if not result.passed:
                break
            best = result
    reached = best.cameras if best else 0
    print(
        f"fleet ratio largest passing / target: {reached / TARGET:.2f} "
        f"({reached} of {TARGET} cameras, p99 < {P99_LIMIT_S:g} s, no loss)"
    )
    if best is not None:
        print(
            f"at {best.cameras}: p99 {best.p99_s * 1000:.1f} ms = "
            f"{best.p99_s / max(baseline.p99_s, 1e-6):.1f} x baseline p99 "
            f"({baseline.p99_s * 1000:.1f} ms at {BASELINE}); {best.messages_per_s:.0f} msg/s; "
            f"{best.cpu_per_camera_minute * 1000:.2f} ms CPU per camera-minute; "
            f"{best.rss_kib_per_camera:.0f} KiB RSS per camera"
        )
    print(f"took {time.monotonic() - started:.0f} s")


def main() -> None:
    chosen = os.environ.get("BODYCAM_BENCH_FLEET_SIZES")
    sizes = [int(s) for s in chosen.split(",")] if chosen else SIZES
    asyncio.run(run(sizes))


if __name__ == "__main__":
    main()
