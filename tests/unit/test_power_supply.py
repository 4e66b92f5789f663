"""PowerSupplyBattery against fake /sys/class/power_supply trees."""

from __future__ import annotations

import errno
import itertools
from pathlib import Path

import pytest

from bodycam.drivers import power_supply
from bodycam.drivers.interfaces import Battery, BatteryReading, HardwareError
from bodycam.drivers.power_supply import PowerSupplyBattery, estimate_percent
from tests.fakes.sysfs import FakePowerSupply

GAUGE = "bq27441-0"


@pytest.fixture
def sysfs(tmp_path: Path) -> FakePowerSupply:
    return FakePowerSupply(tmp_path / "power_supply")


def _battery(sysfs: FakePowerSupply, **kwargs: str) -> PowerSupplyBattery:
    return PowerSupplyBattery(sysfs.root, **kwargs)


def test_is_a_battery(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(GAUGE)
    battery: Battery = _battery(sysfs)  # mypy checks the protocol
    assert battery.read() == BatteryReading(percent=80.0, charging=False, present=True)


@pytest.mark.parametrize(
    ("status", "charging"),
    [
        ("Charging", True),
        ("Discharging", False),
        ("Full", False),
        ("Not charging", False),
        ("Unknown", False),
        (None, False),
    ],
)
def test_status_gives_charging(sysfs: FakePowerSupply, status: str | None, charging: bool) -> None:
    sysfs.add_battery(GAUGE, capacity=57, status=status)
    assert _battery(sysfs).read() == BatteryReading(percent=57.0, charging=charging)


def test_readings_follow_the_gauge(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(GAUGE, capacity=80)
    battery = _battery(sysfs)
    assert battery.read().percent == 80.0
    sysfs.set(GAUGE, "capacity", 79)
    sysfs.set(GAUGE, "status", "Charging")
    assert battery.read() == BatteryReading(percent=79.0, charging=True)


def test_any_online_charger_means_charging(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(GAUGE, status="Not charging")
    sysfs.add_supply("ac", type="Mains", online=False)
    sysfs.add_supply("usb", type="USB", online=False)
    battery = _battery(sysfs)
    assert not battery.read().charging
    sysfs.set("usb", "online", 2)  # 2: online, programmable (USB PD): still online
    assert battery.read().charging
    sysfs.set("usb", "online", 0)
    sysfs.set("ac", "online", 1)
    assert battery.read().charging


def test_named_charger_is_the_only_one_that_counts(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(GAUGE)
    sysfs.add_supply("ac", type="Mains", online=True)
    sysfs.add_supply("usb", type="USB", online=False)
    battery = _battery(sysfs, charger="usb")
    assert not battery.read().charging
    sysfs.set("usb", "online", 1)
    assert battery.read().charging


def test_named_charger_missing(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(GAUGE)
    with pytest.raises(HardwareError, match=r"battery\.charger: no power supply 'usb'"):
        _battery(sysfs, charger="usb")


def test_named_charger_vanishing(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(GAUGE)
    sysfs.add_supply("usb")
    battery = _battery(sysfs, charger="usb")
    sysfs.remove("usb")
    with pytest.raises(HardwareError, match=r"battery\.charger: charger usb is gone"):
        battery.read()


def test_a_broken_other_supply_does_not_cost_the_reading(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(GAUGE, capacity=40)
    sysfs.add_supply("usb")
    sysfs.set("usb", "online", "\x00\xff")
    assert _battery(sysfs).read() == BatteryReading(percent=40.0, charging=False)


def test_auto_detect_picks_the_first_system_battery(sysfs: FakePowerSupply) -> None:
    sysfs.add_supply("AC", type="Mains", online=False)
    sysfs.add_battery("a-mouse", capacity=10, scope="Device")  # a peripheral's battery
    sysfs.add_battery("bq27441-0", capacity=66)
    sysfs.add_battery("zz-second", capacity=12)
    battery = _battery(sysfs)
    assert battery.name == "bq27441-0"
    assert battery.read().percent == 66.0


def test_named_supply_is_used(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery("bq27441-0", capacity=66)
    sysfs.add_battery("max17048", capacity=33)
    assert _battery(sysfs, supply="max17048").read().percent == 33.0


def test_missing_gauge_names_the_key(sysfs: FakePowerSupply) -> None:
    sysfs.add_supply("usb")
    with pytest.raises(HardwareError, match=r"battery\.supply: no battery in .*\(there: usb\)"):
        _battery(sysfs)
    with pytest.raises(HardwareError, match=r"battery\.supply: no power supply 'bq27441-0'"):
        _battery(sysfs, supply="bq27441-0")


def test_no_power_supply_class_at_all(tmp_path: Path) -> None:
    with pytest.raises(HardwareError, match=r"battery\.supply: no battery .*there: nothing"):
        PowerSupplyBattery(tmp_path / "absent")


def test_gauge_vanishing_between_reads(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(GAUGE, capacity=70)
    battery = _battery(sysfs)
    assert battery.read().percent == 70.0
    sysfs.remove(GAUGE)
    for _ in range(2):  # every read says so: no stale 70 %
        with pytest.raises(HardwareError, match=rf"battery\.supply: fuel gauge {GAUGE} is gone"):
            battery.read()
    sysfs.add_battery(GAUGE, capacity=69)  # driver rebound
    assert battery.read().percent == 69.0


def test_auto_detected_gauge_coming_back_under_another_name(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery("bq27441-0", capacity=70)
    battery = _battery(sysfs)
    sysfs.remove("bq27441-0")
    sysfs.add_battery("bq27441-1", capacity=68)
    assert battery.read().percent == 68.0
    assert battery.name == "bq27441-1"


def test_a_named_gauge_is_not_swapped_for_another(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery("bq27441-0")
    battery = _battery(sysfs, supply="bq27441-0")
    sysfs.remove("bq27441-0")
    sysfs.add_battery("bq27441-1")
    with pytest.raises(HardwareError, match="bq27441-0 is gone"):
        battery.read()


@pytest.mark.parametrize("code", [errno.ENODEV, errno.ENXIO])
def test_enodev_reads_mean_gone(
    sysfs: FakePowerSupply, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    sysfs.add_battery(GAUGE)
    battery = _battery(sysfs)

    def dead(path: Path) -> bytes:
        raise OSError(code, "gone", str(path))

    monkeypatch.setattr(power_supply, "_read_bytes", dead)
    with pytest.raises(HardwareError, match=f"fuel gauge {GAUGE} is gone"):
        battery.read()


def test_a_gauge_that_does_not_answer(
    sysfs: FakePowerSupply, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysfs.add_battery(GAUGE)
    battery = _battery(sysfs)
    real = power_supply._read_bytes

    def flaky(path: Path) -> bytes:
        if path.name == "capacity":
            raise OSError(errno.EIO, "Input/output error", str(path))
        return real(path)

    monkeypatch.setattr(power_supply, "_read_bytes", flaky)
    with pytest.raises(HardwareError) as caught:
        battery.read()
    message = str(caught.value)
    assert message.startswith(f"battery.supply: fuel gauge {GAUGE} does not answer")
    assert "capacity" in message
    assert "Input/output error" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        ("capacity", "eighty"),
        ("capacity", "101"),
        ("capacity", "-1"),
        ("capacity", "8_0"),
        ("capacity", ""),
        ("capacity", "\x00\x01"),
        ("capacity", "\xff\xfe"),
        ("present", "yes"),
    ],
)
def test_garbage_is_an_error(sysfs: FakePowerSupply, attr: str, value: str) -> None:
    sysfs.add_battery(GAUGE)
    battery = _battery(sysfs)
    sysfs.set(GAUGE, attr, value)
    with pytest.raises(HardwareError, match=rf"battery\.supply: fuel gauge {GAUGE} shows {attr}"):
        battery.read()


def test_unknown_status_is_tolerated(
    sysfs: FakePowerSupply, caplog: pytest.LogCaptureFixture
) -> None:
    sysfs.add_battery(GAUGE, status="Charging fast")  # a newer kernel's word
    battery = _battery(sysfs)
    assert battery.read() == BatteryReading(percent=80.0, charging=False)
    battery.read()
    assert sum("unknown status" in r.message for r in caplog.records) == 1


def test_battery_absent(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(GAUGE, present=False)
    assert _battery(sysfs).read() == BatteryReading(percent=0.0, charging=True, present=False)


def test_voltage_only_gauge_estimates(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(
        "ups-hat",
        capacity=None,
        voltage_now_uv=3_800_000,
        voltage_min_design_uv=3_000_000,
        voltage_max_design_uv=4_200_000,
    )
    battery = _battery(sysfs)
    assert battery.read().percent == pytest.approx(50.0, abs=1.0)
    sysfs.set("ups-hat", "voltage_now", 4_250_000)
    assert battery.read().percent == 100.0
    sysfs.set("ups-hat", "voltage_now", 2_900_000)
    assert battery.read().percent == 0.0


def test_voltage_falls_back_to_guessed_thresholds(sysfs: FakePowerSupply) -> None:
    supply = sysfs.add_battery("ups-hat", capacity=None, voltage_now_uv=7_600_000)
    (supply / "voltage_min").write_text("6000000\n")  # two cells in series
    (supply / "voltage_max").write_text("8400000\n")
    assert _battery(sysfs).read().percent == pytest.approx(50.0, abs=1.0)


def test_voltage_without_thresholds_is_an_error(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery("ups-hat", capacity=None, voltage_now_uv=3_800_000)
    with pytest.raises(HardwareError, match=r"battery\.supply: .*ups-hat shows no charge"):
        _battery(sysfs).read()


def test_inverted_design_window_is_garbage(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(
        "ups-hat",
        capacity=None,
        voltage_now_uv=3_800_000,
        voltage_min_design_uv=4_200_000,
        voltage_max_design_uv=3_000_000,
    )
    with pytest.raises(HardwareError, match="not a reading"):
        _battery(sysfs).read()


def test_estimate_is_monotonic_and_bounded() -> None:
    empty, full = 3_000_000, 4_200_000
    voltages = range(2_500_000, 4_700_001, 5_000)
    estimates = [estimate_percent(v, empty, full) for v in voltages]
    assert all(b >= a for a, b in itertools.pairwise(estimates))
    assert estimates[0] == 0.0
    assert estimates[-1] == 100.0
    assert len(set(estimates)) > 100  # it moves with the voltage, not in a few steps
    # Scaled to the pack: the same state of charge on a 2S pack.
    assert estimate_percent(7_600_000, 6_000_000, 8_400_000) == estimate_percent(
        3_800_000, 3_000_000, 4_200_000
    )


def test_one_line_errors(sysfs: FakePowerSupply) -> None:
    sysfs.add_battery(GAUGE)
    battery = _battery(sysfs)
    sysfs.remove(GAUGE)
    with pytest.raises(HardwareError) as caught:
        battery.read()
    assert "\n" not in str(caught.value)
    assert caught.value.__cause__ is None  # no chained traceback to print
