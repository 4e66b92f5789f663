"""The CI files keep the promises docs/hil.md makes about them.

Every job and step has a time limit, and the limits leave room for the step that gives the
bench back. The hosted jobs run exactly the README's test command. The bench jobs run the
acceptance suite through labgrid, reserve and lock the place first, always unlock it, and
run one at a time. The bench guide names every role and option the rig asks for.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.acceptance import labgrid_rig
from tests.acceptance.labgrid_rig import _REQUIRED_OPTIONS, _WIRING

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"
GITHUB_CI = REPO / ".github" / "workflows" / "ci.yml"
GITHUB_BENCH = REPO / ".github" / "workflows" / "bench.yml"
GITLAB = REPO / ".gitlab-ci.yml"
HIL_DOC = REPO / "docs" / "hil.md"

TEST_COMMAND = "./dev test"
PLACE = "bodycam-bench-1"
BENCH_LOCK = "bodycam-bench"  # concurrency group, resource group, runner label and tag
# Top-level keys of .gitlab-ci.yml that are not jobs.
GITLAB_KEYWORDS = frozenset(
    {"default", "include", "stages", "variables", "workflow", "image", "services", "cache",
     "before_script", "after_script", "pages"}
)  # fmt: skip
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_OPTIONS_WITH_VALUE = frozenset({"-p", "--place", "-x", "--coordinator", "-c", "--config"})
_UNITS_S = {
    "": 1, "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
}  # fmt: skip


# --- reading the files -------------------------------------------------------------------


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


def github_jobs(path: Path) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = load(path)["jobs"]
    assert isinstance(jobs, dict)
    assert jobs, f"{path}: no jobs"
    return jobs


def github_triggers(path: Path) -> dict[str, Any]:
    workflow = load(path)
    # YAML 1.1 (PyYAML) reads a bare `on` key as the boolean true.
    triggers = workflow.get("on", workflow.get(True))
    assert isinstance(triggers, dict), f"{path}: `on` is not a mapping"
    return triggers


def gitlab_jobs() -> dict[str, dict[str, Any]]:
    return {
        name: job
        for name, job in load(GITLAB).items()
        if isinstance(name, str)
        and name not in GITLAB_KEYWORDS
        and not name.startswith(".")
        and isinstance(job, dict)
    }


def seconds(duration: str | int | float) -> float:
    """A time limit in seconds: GitLab's `timeout:` ("2h", "1h 30m") or timeout(1)'s ("45m")."""
    if isinstance(duration, int | float):
        return float(duration)
    text = duration.strip().lower()
    parts = _DURATION.findall(text)
    assert parts, f"not a duration: {duration!r}"
    assert _DURATION.sub("", text).strip() == "", f"not a duration: {duration!r}"
    total = 0.0
    for number, unit in parts:
        assert unit in _UNITS_S, f"unknown unit {unit!r} in {duration!r}"
        total += float(number) * _UNITS_S[unit]
    return total


def run_lines(step_or_job: dict[str, Any], key: str = "run") -> list[str]:
    """The shell lines of a GitHub step's `run` or a GitLab job's script, comments left out."""
    value = step_or_job.get(key, [])
    text = value if isinstance(value, str) else "\n".join(value)
    lines = [line.strip() for line in text.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def words(line: str) -> list[str]:
    """A command line's words, without a leading `timeout N`."""
    split = shlex.split(line)
    if split[:1] == ["timeout"]:
        split = split[2:]
    return split


def timeout_limits(line: str) -> list[str]:
    """The limits of every `timeout N` on a line (after `||` too)."""
    split = shlex.split(line)
    return [split[i + 1] for i, word in enumerate(split[:-1]) if word == "timeout"]


def runs_acceptance_through_labgrid(line: str) -> bool:
    split = words(line)
    return split[:3] == ["./dev", "test", "tests/acceptance"] and "--lg-env" in split


def labgrid_commands(lines: list[str]) -> list[str]:
    """The labgrid-client subcommands these lines run (``reserve``, ``lock``...), in order."""
    found = []
    for line in lines:
        split = shlex.split(line)
        for index, word in enumerate(split):
            if not word.endswith("labgrid-client"):
                continue
            rest = split[index + 1 :]
            while rest and rest[0].startswith("-"):  # global options: -p PLACE, -x ADDRESS
                rest = rest[2:] if rest[0] in _OPTIONS_WITH_VALUE else rest[1:]
            if rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):  # not `[ -x .../labgrid-client ]`
                found.append(rest[0])
    return found


def step_index(steps: list[dict[str, Any]], command: str) -> int:
    """The one step that runs ``labgrid-client COMMAND`` (or ``--lg-env`` for the suite)."""
    found = [
        i
        for i, step in enumerate(steps)
        if (command == "--lg-env" and any(map(runs_acceptance_through_labgrid, run_lines(step))))
        or command in labgrid_commands(run_lines(step))
    ]
    assert len(found) == 1, f"expected one step running {command!r}, found {found}"
    return found[0]


def bench_github_job() -> dict[str, Any]:
    jobs = github_jobs(GITHUB_BENCH)
    assert len(jobs) == 1, list(jobs)
    return next(iter(jobs.values()))


def bench_gitlab_job() -> dict[str, Any]:
    benches = [job for name, job in gitlab_jobs().items() if "bench" in name]
    assert len(benches) == 1, list(gitlab_jobs())
    return benches[0]


# --- time limits -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [GITHUB_CI, GITHUB_BENCH], ids=lambda p: p.name)
def test_every_github_job_and_step_has_a_time_limit(path: Path) -> None:
    for name, job in github_jobs(path).items():
        limit = job.get("timeout-minutes")
        assert isinstance(limit, int | float), f"{path.name}: job {name} has no timeout-minutes"
        assert limit > 0
        for index, step in enumerate(job["steps"]):
            label = step.get("name") or step.get("uses") or f"step {index}"
            step_limit = step.get("timeout-minutes")
            assert isinstance(step_limit, int | float), f"{path.name}: {label}: no timeout-minutes"
            assert 0 < step_limit <= limit, f"{path.name}: {label}: {step_limit} min"


def test_the_github_bench_steps_fit_inside_the_job_limit() -> None:
    """Were the job's own limit to strike first, the unlock step would never run."""
    job = bench_github_job()
    total = sum(step["timeout-minutes"] for step in job["steps"])
    assert total < job["timeout-minutes"], (total, job["timeout-minutes"])


def test_every_gitlab_job_has_a_time_limit() -> None:
    jobs = gitlab_jobs()
    assert jobs, "no jobs in .gitlab-ci.yml"
    for name, job in jobs.items():
        assert "timeout" in job, f"{name} has no timeout"
        assert seconds(job["timeout"]) > 0


def test_every_command_of_the_gitlab_bench_job_is_bounded() -> None:
    """GitLab skips after_script when the job's limit strikes, and it is what unlocks."""
    job = bench_gitlab_job()
    script = run_lines(job, "script")
    assert script
    for line in script:
        assert line.startswith("timeout "), f"unbounded: {line}"
    script_s = sum(seconds(shlex.split(line)[1]) for line in script)
    after_s = sum(
        seconds(limit) for line in run_lines(job, "after_script") for limit in timeout_limits(line)
    )
    assert script_s + after_s < seconds(job["timeout"]), (script_s, after_s, job["timeout"])


def test_the_seconds_reader_reads_what_the_files_use() -> None:
    assert seconds("30m") == 1800
    assert seconds("2h") == 7200
    assert seconds("1h 30m") == 5400
    assert seconds("2700") == 2700
    assert seconds(45) == 45
    with pytest.raises(AssertionError):
        seconds("soon")


# --- the hosted jobs ---------------------------------------------------------------------


def test_the_readme_and_ci_run_name_the_same_test_command() -> None:
    assert f"{TEST_COMMAND} " in README.read_text(encoding="utf-8")
    commands = [
        words(line.removeprefix("exec ")) for line in run_lines({"run": CI_RUN.read_text()})
    ]
    assert shlex.split(TEST_COMMAND) in commands, commands


def test_the_hosted_jobs_run_exactly_the_readme_test_command() -> None:
    (job,) = github_jobs(GITHUB_CI).values()
    assert job["runs-on"] == "ubuntu-latest"
    commands = [line for step in job["steps"] for line in run_lines(step)]
    assert commands == [TEST_COMMAND]
    python = [step for step in job["steps"] if "setup-python" in step.get("uses", "")]
    assert python, "no actions/setup-python step"
    assert str(python[0]["with"]["python-version"]) == "3.11"
    assert {"push", "pull_request"} <= set(github_triggers(GITHUB_CI))

    sims = [job for name, job in gitlab_jobs().items() if "sim" in name]
    assert len(sims) == 1, list(gitlab_jobs())
    assert sims[0]["script"] == [TEST_COMMAND]
    assert sims[0]["image"].startswith("python:3.11")


# --- the bench jobs ----------------------------------------------------------------------


def test_the_bench_jobs_run_the_acceptance_suite_through_labgrid() -> None:
    job = bench_github_job()
    lines = [line for step in job["steps"] for line in run_lines(step)]
    assert [line for line in lines if runs_acceptance_through_labgrid(line)], lines
    assert BENCH_LOCK in job["runs-on"]
    assert job["env"]["LG_PLACE"] == PLACE
    triggers = github_triggers(GITHUB_BENCH)
    assert "workflow_dispatch" in triggers
    assert "v*" in triggers["push"]["tags"]

    gitlab = bench_gitlab_job()
    assert [line for line in run_lines(gitlab, "script") if runs_acceptance_through_labgrid(line)]
    assert BENCH_LOCK in gitlab["tags"]
    assert gitlab["variables"]["LG_PLACE"] == PLACE


def test_the_github_bench_job_locks_before_the_suite_and_always_unlocks_after() -> None:
    steps = bench_github_job()["steps"]
    reserve = step_index(steps, "reserve")
    lock = step_index(steps, "lock")
    suite = step_index(steps, "--lg-env")
    unlock = step_index(steps, "unlock")
    assert reserve < lock < suite < unlock
    assert "--wait" in steps[reserve]["run"]  # queue for the place, in turn
    assert steps[unlock].get("if") == "always()"
    assert "cancel-reservation" in labgrid_commands(run_lines(steps[unlock]))
    report = [s for s in steps[suite:] if "upload-artifact" in s.get("uses", "")]
    assert report, "no JUnit report upload after the suite"
    assert report[0].get("if") == "always()"
    assert report[0]["with"]["path"] == "acceptance.xml"


def test_the_gitlab_bench_job_locks_before_the_suite_and_always_unlocks_after() -> None:
    job = bench_gitlab_job()
    script = run_lines(job, "script")
    suite = [i for i, line in enumerate(script) if runs_acceptance_through_labgrid(line)]
    assert len(suite) == 1, script
    before = labgrid_commands(script[: suite[0]])
    assert before == ["reserve", "lock"], before
    assert labgrid_commands(script[suite[0] :]) == [], "the bench is still locked after the suite"
    assert any("--wait" in line for line in script)  # queue for the place, in turn
    # GitLab runs after_script after a failure or a cancel too.
    after = labgrid_commands(run_lines(job, "after_script"))
    assert after == ["unlock", "cancel-reservation"], after
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "acceptance.xml"


def test_the_bench_jobs_run_one_at_a_time() -> None:
    concurrency = load(GITHUB_BENCH)["concurrency"]
    assert concurrency["group"] == BENCH_LOCK
    assert concurrency["cancel-in-progress"] is False  # a cancelled run leaves a camera mid-test
    assert bench_gitlab_job()["resource_group"] == BENCH_LOCK


# --- the bench guide ---------------------------------------------------------------------


def test_the_bench_guide_names_every_role_the_rig_asks_for() -> None:
    text = HIL_DOC.read_text(encoding="utf-8")
    roles = {*_WIRING, "dock-port"}
    missing = sorted(role for role in roles if f"`{role}`" not in text)
    assert not missing, f"docs/hil.md does not name roles {missing}"


def test_the_bench_guide_names_every_option_the_rig_reads() -> None:
    text = HIL_DOC.read_text(encoding="utf-8")
    source = Path(labgrid_rig.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r'option\(\s*"(bodycam_\w+)"', source))
    assert read, "found no option the rig reads: has labgrid_rig.py changed shape?"
    options = read | set(_REQUIRED_OPTIONS)
    missing = sorted(option for option in options if f"`{option}`" not in text)
    assert not missing, f"docs/hil.md does not name options {missing}"
    assert PLACE in text


def test_the_bench_guide_links_to_files_that_exist() -> None:
    text = HIL_DOC.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if "://" not in link]
    assert local, "no links found"
    broken = [link for link in local if not (HIL_DOC.parent / link).exists()]
    assert not broken, broken
