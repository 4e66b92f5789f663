"""The acceptance suite through labgrid's pytest plugin, with the simulator as the bench.

Each test runs pytest on ``tests/acceptance`` in a subprocess with ``--lg-env``, as a bench
runner would, and reads its JUnit report: the whole suite passes through labgrid's
environment, target, drivers and protocols; a bench shared through a real coordinator and
exporter serves the dock port over RFC 2217; a bench lacking a part skips with the part's
name; a camera that never enumerates, an unreachable coordinator, a bench another run holds
and a bad env file are each one clear line, quickly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from bodycam.sim.broker import free_port
from tests.server_process import listening, ser2net_command, server

# Its own processes and real time: in the slow half of the suite (./dev test runs it second).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SIM_ENV = REPO / "tests" / "acceptance" / "envs" / "sim.yaml"
PLACE = "bodycam-bench-1"
CI_USER = "bodycam-ci"  # who the suite's runs are, to the labgrid coordinator


@dataclass
class SuiteRun:
    returncode: int
    output: str
    outcomes: dict[str, str]  # test name -> passed / skipped / failed / error
    messages: dict[str, str]  # test name -> skip or failure message
    properties: dict[str, str]


def run_suite(tmp_path: Path, env_file: Path, *args: str, timeout_s: float = 420) -> SuiteRun:
    report = tmp_path / "report.xml"
    environ = {**os.environ, "LG_BODYCAM_SIM_DIR": str(tmp_path / "bench"), "LG_USERNAME": CI_USER}
    command = [
        sys.executable, "-m", "pytest", "tests/acceptance", "--lg-env", str(env_file),
        "-p", "no:cacheprovider", f"--junitxml={report}", "-o", "junit_family=xunit2", *args,
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    outcomes: dict[str, str] = {}
    messages: dict[str, str] = {}
    properties: dict[str, str] = {}
    if report.exists():
        root = ET.parse(report).getroot()
        for prop in root.iter("property"):
            properties[prop.get("name", "")] = prop.get("value", "")
        for case in root.iter("testcase"):
            name = case.get("name", "")
            outcomes[name] = "passed"
            for kind in ("skipped", "failure", "error"):
                found = case.find(kind)
                if found is not None:
                    outcomes[name] = kind
                    messages[name] = found.get("message", "")
    return SuiteRun(done.returncode, done.stdout + done.stderr, outcomes, messages, properties)


def acceptance_tests() -> set[str]:
    """The names of the acceptance tests, as pytest collects them without labgrid."""
    command = [sys.executable, "-m", "pytest", "tests/acceptance", "--collect-only", "-q"]
    done = subprocess.run(
        [*command, "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return {line.split("::")[-1] for line in done.stdout.splitlines() if "::" in line}


def derived_env(
    tmp_path: Path,
    *,
    drop_drivers: frozenset[str] = frozenset(),
    coordinator: str | None = None,
    **options: object,
) -> Path:
    """A copy of the sim environment with some roles removed or options changed.

    With ``coordinator``, the dock port comes from the place ``PLACE`` on that labgrid
    coordinator (a RemotePlace), as on a shared bench; the other roles stay local.
    """
    # !template tags are labgrid's: keep them as they are by loading them as plain tagged text.
    data = yaml.load(SIM_ENV.read_text(), Loader=_TemplateLoader)
    target = data["targets"]["main"]
    target["drivers"] = [
        d for d in target["drivers"] if next(iter(d.values()))["name"] not in drop_drivers
    ]
    target["options"].update(options)
    if coordinator is not None:
        target["resources"] = [r for r in target["resources"] if "RawSerialPort" not in r]
        target["resources"].append({"RemotePlace": {"name": PLACE}})
        data["options"] = {"coordinator_address": coordinator}
    path = tmp_path / "env.yaml"
    path.write_text(yaml.dump(data, Dumper=_TemplateDumper, sort_keys=False))
    return path


class _Template(str):
    __slots__ = ()


class _TemplateLoader(yaml.SafeLoader):
    pass


class _TemplateDumper(yaml.SafeDumper):
    pass


def _load_template(loader: yaml.SafeLoader, node: yaml.Node) -> _Template:
    assert isinstance(node, yaml.ScalarNode)
    return _Template(loader.construct_scalar(node))


def _dump_template(dumper: yaml.SafeDumper, value: _Template) -> yaml.Node:
    return dumper.represent_scalar("!template", str(value))


_TemplateLoader.add_constructor("!template", _load_template)
_TemplateDumper.add_representer(_Template, _dump_template)


def test_the_whole_suite_passes_through_labgrid_on_the_simulator(tmp_path: Path) -> None:
    run = run_suite(tmp_path, SIM_ENV)
    assert run.returncode == 0, run.output[-6000:]
    assert set(run.outcomes) == acceptance_tests(), "not the same suite"
    assert set(run.outcomes.values()) == {"passed"}, run.outcomes
    # It really went through labgrid: its fixture recorded the environment, and the rig
    # the suite used was the labgrid target, not the default simulator rig.
    assert run.properties.get("ENV_CONFIG") == str(SIM_ENV)
    assert run.properties.get("bodycam_rig", "").startswith("labgrid target 'main'"), run.properties


def test_a_bench_without_a_part_skips_what_needs_it_and_names_it(tmp_path: Path) -> None:
    env = derived_env(
        tmp_path, drop_drivers=frozenset({"indicators", "record-button"}), bodycam_boot_s=3
    )
    run = run_suite(tmp_path, env, "-k", "red_light or pre_event")
    assert run.returncode == 0, run.output[-4000:]
    assert set(run.outcomes.values()) == {"skipped"}, run.outcomes
    light = next(m for n, m in run.messages.items() if "red_light" in n)
    button = next(m for n, m in run.messages.items() if "pre_event" in n)
    assert "'indicators'" in light
    assert "logic analyser" in light
    assert "'record-button'" in button


def test_a_camera_that_never_enumerates_fails_with_the_port_and_the_wait(tmp_path: Path) -> None:
    env = derived_env(tmp_path, bodycam_enumerate_s=2)
    text = env.read_text().replace("dev/bodycam/BODYCAM-SIM-0001", "dev/bodycam/NOT-THIS-CAMERA")
    env.write_text(text)
    started = time.monotonic()
    run = run_suite(tmp_path, env, "-k", "rogue_dock")
    assert run.returncode != 0
    assert list(run.outcomes.values()) == ["failure"], run.outcomes
    message = next(iter(run.messages.values()))
    assert "never enumerated" in message
    assert "NOT-THIS-CAMERA" in message
    assert time.monotonic() - started < 120


def test_an_unreachable_coordinator_is_one_clear_error(tmp_path: Path) -> None:
    coordinator = f"127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    env = derived_env(tmp_path, coordinator=coordinator)
    run = run_suite(tmp_path, env, "-k", "rogue_dock", timeout_s=120)
    assert run.returncode != 0
    assert list(run.outcomes.values()) == ["error"], run.outcomes
    message = next(iter(run.messages.values()))
    assert coordinator in message
    assert "Could not connect to coordinator" in message
    assert "Traceback" not in message
    assert time.monotonic() - started < 60


@dataclass
class SharedBench:
    """A bench shared through a real labgrid coordinator and exporter."""

    coordinator: str

    def client(self, *args: str, user: str = CI_USER) -> subprocess.CompletedProcess[str]:
        """``labgrid-client -p PLACE ARGS`` as ``user``."""
        tool = Path(sys.executable).parent / "labgrid-client"
        return subprocess.run(
            [str(tool), "-x", self.coordinator, "-p", PLACE, *args],
            env={**os.environ, "LG_USERNAME": user},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


@pytest.fixture
def shared_bench(tmp_path: Path) -> Iterator[SharedBench]:
    """The simulator's dock port on a shared bench: ser2net serves it over RFC 2217, an
    exporter offers it to a coordinator, and the coordinator's place ``PLACE`` matches it.

    labgrid's exporter serves only ``/dev/...`` ports through its own ser2net, so ser2net is
    started here with the exporter's settings and the exporter offers that network port.
    """
    tool = Path(sys.executable).parent
    ser2net_port, address = free_port(), f"127.0.0.1:{free_port()}"
    device = tmp_path / "bench" / "dev" / "bodycam" / "BODYCAM-SIM-0001"
    exports = tmp_path / "exporter.yaml"
    exports.write_text(
        f"{PLACE}:\n  dock-port:\n    cls: NetworkSerialPort\n    host: 127.0.0.1\n"
        f"    port: {ser2net_port}\n    protocol: rfc2217\n"
    )
    bench = SharedBench(address)
    coordinator = [str(tool / "labgrid-coordinator"), "--listen", address]
    exporter = [
        str(tool / "labgrid-exporter"), "-c", address, "-n", "benchhost",
        "--hostname", "127.0.0.1", str(exports),
    ]  # fmt: skip

    def offered() -> bool:
        return "NetworkSerialPort/dock-port" in bench.client("show").stdout

    with (
        server(ser2net_command(device, ser2net_port), log=tmp_path / "ser2net.log",
                ready=lambda: listening(ser2net_port)),
        server(coordinator, log=tmp_path / "coordinator.log",
                ready=lambda: bench.client("create").returncode == 0),
    ):  # fmt: skip
        assert bench.client("add-match", f"benchhost/{PLACE}/*").returncode == 0
        with server(exporter, log=tmp_path / "exporter.log", ready=offered):
            yield bench


def test_a_shared_bench_runs_the_suite_through_coordinator_exporter_and_rfc2217(
    tmp_path: Path, shared_bench: SharedBench
) -> None:
    acquired = shared_bench.client("acquire")
    assert acquired.returncode == 0, acquired.stderr
    try:
        # Garbage, then a whole offload, all through the exported port.
        run = run_suite(
            tmp_path,
            derived_env(tmp_path, coordinator=shared_bench.coordinator),
            "-k",
            "bad_frames",
        )
    finally:
        shared_bench.client("release")
    assert run.returncode == 0, run.output[-6000:]
    assert list(run.outcomes.values()) == ["passed"], run.outcomes
    assert run.properties.get("TARGET_MAIN_REMOTE") == PLACE


def test_a_bench_locked_by_another_run_stops_the_run_naming_the_holder(
    tmp_path: Path, shared_bench: SharedBench
) -> None:
    acquired = shared_bench.client("acquire", user="other-ci")
    assert acquired.returncode == 0, acquired.stderr
    started = time.monotonic()
    run = run_suite(
        tmp_path,
        derived_env(tmp_path, coordinator=shared_bench.coordinator),
        "-k",
        "rogue_dock",
        timeout_s=120,
    )
    assert run.returncode != 0
    assert list(run.outcomes.values()) == ["error"], run.outcomes
    message = next(iter(run.messages.values()))
    assert f"place {PLACE} is not acquired by your user, acquired by other-ci" in message
    assert time.monotonic() - started < 60


def test_an_env_naming_an_unset_variable_is_a_usage_error_not_a_traceback() -> None:
    environ = {k: v for k, v in os.environ.items() if k != "LG_BODYCAM_SIM_DIR"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/acceptance", "--lg-env", str(SIM_ENV)],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert "unknown variable 'LG_BODYCAM_SIM_DIR'" in output
    assert "INTERNALERROR" not in output
    assert "Traceback" not in output
