"""USB gadget set-up and teardown against a fake configfs that enforces configfs's rules."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

import pytest

from bodycam.drivers.interfaces import HardwareError
from bodycam.drivers.usb_gadget import (
    ConfigfsOps,
    GadgetError,
    GadgetSpec,
    OsConfigfsOps,
    setup_gadget,
    teardown_gadget,
)
from tests.fakes.sysfs import FakeConfigfs, FakeUdc

UDC = "fe980000.usb"


@dataclass
class Rig:
    configfs: FakeConfigfs
    udc: FakeUdc

    @property
    def gadget(self) -> Path:
        return self.configfs.gadgets / "bodycam"

    def setup(self, spec: GadgetSpec, udc: str | None = None) -> str:
        return setup_gadget(
            spec,
            configfs=self.configfs.root,
            udc=udc,
            udc_class=self.udc.root,
            ops=self.configfs,
        )

    def teardown(self, name: str = "bodycam") -> bool:
        return teardown_gadget(name, configfs=self.configfs.root, ops=self.configfs)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    udc = FakeUdc(tmp_path / "class" / "udc")
    udc.add(UDC)
    return Rig(FakeConfigfs(tmp_path / "config", udc), udc)


def _show(path: Path) -> str:
    return path.read_text().removesuffix("\n")


def test_os_ops_is_configfs_ops() -> None:
    ops: ConfigfsOps = OsConfigfsOps()  # mypy checks the protocol
    assert ops is not None


def test_setup_builds_the_documented_tree(rig: Rig) -> None:
    spec = GadgetSpec(serial="CAM-0042", bcd_device=0x0102)
    assert rig.setup(spec) == UDC
    g = rig.gadget
    expected = {
        "idVendor": "0x1209",
        "idProduct": "0x0001",
        "bcdDevice": "0x0102",
        "bcdUSB": "0x0200",
        "strings/0x409/serialnumber": "CAM-0042",
        "strings/0x409/manufacturer": "bodycam project",
        "strings/0x409/product": "bodycam camera",
        "configs/c.1/MaxPower": "500",
        "configs/c.1/strings/0x409/configuration": "CDC ACM",
        "UDC": UDC,
    }
    assert {rel: _show(g / rel) for rel in expected} == expected
    link = g / "configs" / "c.1" / "acm.usb0"
    assert link.is_symlink()
    assert link.resolve() == (g / "functions" / "acm.usb0").resolve()
    assert [p.name for p in (g / "functions").iterdir()] == ["acm.usb0"]
    assert [p.name for p in (g / "configs").iterdir()] == ["c.1"]
    assert rig.configfs.bound == {"bodycam": UDC}
    # Bound last, once everything else is in place.
    assert rig.configfs.calls[-1] == ("write", "usb_gadget/bodycam/UDC")


def test_second_setup_with_the_same_spec_changes_nothing(rig: Rig) -> None:
    spec = GadgetSpec(serial="CAM-0042")
    rig.setup(spec)
    calls = len(rig.configfs.calls)
    assert rig.setup(spec) == UDC
    assert len(rig.configfs.calls) == calls  # not one write: nothing unbound or rebuilt
    assert rig.configfs.bound == {"bodycam": UDC}


def test_setup_binds_a_matching_gadget_left_unbound(rig: Rig) -> None:
    spec = GadgetSpec(serial="CAM-0042")
    rig.setup(spec)
    rig.configfs.write(rig.gadget / "UDC", "\n")  # someone unbound it
    del rig.configfs.calls[:]
    assert rig.setup(spec) == UDC
    assert rig.configfs.calls == [("write", "usb_gadget/bodycam/UDC")]
    assert rig.configfs.bound == {"bodycam": UDC}


def test_setup_with_another_serial_rebuilds(rig: Rig) -> None:
    rig.setup(GadgetSpec(serial="CAM-0042"))
    assert rig.setup(GadgetSpec(serial="CAM-0043")) == UDC
    assert _show(rig.gadget / "strings/0x409/serialnumber") == "CAM-0043"
    ops = [op for op, _path in rig.configfs.calls]
    assert "rmdir" in ops  # torn down, not patched in place while bound
    assert rig.configfs.bound == {"bodycam": UDC}


def test_setup_rebuilds_a_half_built_gadget(rig: Rig) -> None:
    fake = rig.configfs
    fake.mkdir(rig.gadget)
    fake.mkdir(rig.gadget / "functions" / "acm.usb0")  # a set-up that died half-way
    assert rig.setup(GadgetSpec(serial="CAM-0042")) == UDC
    assert (rig.gadget / "configs" / "c.1" / "acm.usb0").is_symlink()


def test_teardown_removes_everything_in_configfs_order(rig: Rig) -> None:
    rig.setup(GadgetSpec(serial="CAM-0042"))
    del rig.configfs.calls[:]
    assert rig.teardown() is True
    assert not rig.gadget.exists()
    assert list(rig.configfs.gadgets.iterdir()) == []
    assert rig.configfs.bound == {}
    g = "usb_gadget/bodycam"
    assert rig.configfs.calls == [
        ("write", f"{g}/UDC"),
        ("unlink", f"{g}/configs/c.1/acm.usb0"),
        ("rmdir", f"{g}/configs/c.1/strings/0x409"),
        ("rmdir", f"{g}/configs/c.1"),
        ("rmdir", f"{g}/functions/acm.usb0"),
        ("rmdir", f"{g}/strings/0x409"),
        ("rmdir", g),
    ]
    assert rig.teardown() is False  # nothing left to do


def test_teardown_of_an_unbound_gadget_does_not_unbind(rig: Rig) -> None:
    rig.setup(GadgetSpec(serial="CAM-0042"))
    rig.configfs.write(rig.gadget / "UDC", "\n")
    del rig.configfs.calls[:]
    assert rig.teardown() is True
    assert ("write", "usb_gadget/bodycam/UDC") not in rig.configfs.calls


@pytest.mark.parametrize(
    ("step", "code"),
    [
        ("unlink while bound", errno.EBUSY),
        ("rmdir config with its link", errno.ENOTEMPTY),
        ("rmdir linked function", errno.EBUSY),
        ("rmdir config strings group", errno.EPERM),
        ("unlink an attribute", errno.EPERM),
        ("empty write to UDC of unbound gadget", errno.ENODEV),
    ],
)
def test_the_fake_refuses_what_configfs_refuses(rig: Rig, step: str, code: int) -> None:
    """The fake is what makes the order test mean something: it must say no."""
    rig.setup(GadgetSpec(serial="CAM-0042"))
    fake, g = rig.configfs, rig.gadget
    if step != "unlink while bound":
        fake.write(g / "UDC", "\n")
    actions = {
        "unlink while bound": lambda: fake.unlink(g / "configs/c.1/acm.usb0"),
        "rmdir config with its link": lambda: fake.rmdir(g / "configs/c.1"),
        "rmdir linked function": lambda: fake.rmdir(g / "functions/acm.usb0"),
        "rmdir config strings group": lambda: fake.rmdir(g / "configs/c.1/strings"),
        "unlink an attribute": lambda: fake.unlink(g / "idVendor"),
        "empty write to UDC of unbound gadget": lambda: fake.write(g / "UDC", "\n"),
    }
    with pytest.raises(OSError) as caught:
        actions[step]()
    assert caught.value.errno == code


def test_no_configfs(tmp_path: Path, rig: Rig) -> None:
    with pytest.raises(GadgetError, match="configfs is not mounted"):
        setup_gadget(
            GadgetSpec(serial="CAM-1"), configfs=tmp_path / "absent", udc_class=rig.udc.root
        )


def test_libcomposite_not_loaded(tmp_path: Path, rig: Rig) -> None:
    bare = FakeConfigfs(tmp_path / "bare", rig.udc, loaded=False)
    with pytest.raises(GadgetError, match=r"libcomposite .*dtoverlay=dwc2.*modules-load=dwc2"):
        setup_gadget(
            GadgetSpec(serial="CAM-1"), configfs=bare.root, udc_class=rig.udc.root, ops=bare
        )
    assert bare.calls == []


def test_no_udc_means_host_mode(rig: Rig) -> None:
    rig.udc.remove(UDC)
    with pytest.raises(GadgetError, match=r"no USB device controller .*host mode.*dwc2"):
        rig.setup(GadgetSpec(serial="CAM-1"))
    assert rig.configfs.calls == []  # checked before anything is built


def test_named_udc_missing(rig: Rig) -> None:
    with pytest.raises(GadgetError, match=r"gadget\.udc: no USB device controller 'musb'"):
        rig.setup(GadgetSpec(serial="CAM-1"), udc="musb")


def test_udc_busy_with_a_legacy_gadget(rig: Rig) -> None:
    rig.udc.claim(UDC, "g_ether")
    with pytest.raises(GadgetError, match=rf"{UDC} is busy: another gadget holds it .*g_serial"):
        rig.setup(GadgetSpec(serial="CAM-1"))
    rig.udc.release(UDC)
    assert rig.setup(GadgetSpec(serial="CAM-1")) == UDC  # freed: the re-run just binds


def test_udc_busy_with_another_configfs_gadget(rig: Rig) -> None:
    rig.setup(GadgetSpec(serial="CAM-1", name="other"))
    with pytest.raises(GadgetError, match="is busy"):
        rig.setup(GadgetSpec(serial="CAM-1"))


class _UdcVanishesAtBind(FakeConfigfs):
    """The controller is listed when set-up looks, and gone when it binds (module unloaded)."""

    def write(self, path: Path, value: str) -> None:
        if path.name == "UDC" and value.strip() and self.udc is not None:
            self.udc.remove(value.strip())
        super().write(path, value)


@pytest.mark.parametrize("code", [errno.ENODEV, errno.EBUSY])
def test_udc_vanishing_before_the_bind(tmp_path: Path, code: int) -> None:
    """Old kernels say ENODEV for an unknown controller, new ones EBUSY: both read 'gone'."""
    udc = FakeUdc(tmp_path / "udc")
    udc.add(UDC)
    fake = _UdcVanishesAtBind(tmp_path / "config", udc, unknown_udc_errno=code)
    with pytest.raises(GadgetError, match=rf"gadget\.udc: .*{UDC} is gone"):
        setup_gadget(GadgetSpec(serial="CAM-1"), configfs=fake.root, udc_class=udc.root, ops=fake)


def test_permission_denied_names_the_service(rig: Rig) -> None:
    rig.configfs.permission_denied = True
    with pytest.raises(GadgetError, match=r"needs root; run it through bodycam-gadget\.service"):
        rig.setup(GadgetSpec(serial="CAM-1"))


@pytest.mark.parametrize(
    "serial", ["", "CAM 1", "CAM/1", "CAM\n1", "Ümlaut", "x" * 65, "../../etc"]
)
def test_bad_serial_is_refused_before_anything_is_written(rig: Rig, serial: str) -> None:
    with pytest.raises(GadgetError, match=r"device\.id: .* cannot be the USB serial number"):
        GadgetSpec(serial=serial)
    assert rig.configfs.calls == []


def test_serial_at_the_limit_is_fine(rig: Rig) -> None:
    serial = "A" * 64
    rig.setup(GadgetSpec(serial=serial))
    assert _show(rig.gadget / "strings/0x409/serialnumber") == serial


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("vendor_id", 0x10000, "gadget.vendor_id"),
        ("bcd_device", 0x010A, "bcd_device"),
        ("max_power_ma", 900, "max_power_ma"),
        ("product", "p" * 127, "gadget.product"),
        ("manufacturer", "", "gadget.manufacturer"),
        ("name", "../x", "gadget name"),
    ],
)
def test_other_bad_values(field: str, value: object, key: str) -> None:
    with pytest.raises(GadgetError, match=key):
        GadgetSpec(serial="CAM-1", **{field: value})  # type: ignore[arg-type]


def test_errors_are_hardware_errors() -> None:
    assert issubclass(GadgetError, HardwareError)


def test_missing_acm_function_module(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.fakes.sysfs as sysfs

    monkeypatch.setattr(sysfs, "_KNOWN_FUNCTIONS", frozenset({"ecm"}))
    with pytest.raises(GadgetError, match="usb_f_acm"):
        rig.setup(GadgetSpec(serial="CAM-1"))
