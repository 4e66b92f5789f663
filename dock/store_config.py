"""The store's own settings, ``store.toml`` in the store root, and creating a store.

Retention and the space the dock leaves free are properties of the store, not of whichever
command happens to open it, so they live beside the custody log rather than on every
command line. A missing file (a store made before this file existed) means the defaults; a
file that is there must be valid as a whole, and every bad value is one error naming its key.
"""

from __future__ import annotations

import logging
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bodycam.daemon.evidence.errors import EvidenceError
from bodycam.daemon.evidence.fsio import fsync_dir, write_file_durably
from bodycam.dock.store_fs import create_empty_file, ensure_dir

__all__ = ["CONFIG_NAME", "StoreConfig", "create_layout", "load_config", "write_config"]

_log = logging.getLogger(__name__)

CONFIG_NAME: Final = "store.toml"
MAX_CONFIG_BYTES: Final = 64 * 1024  # a settings file, never anything larger
# Upper bounds only catch typos (days given as seconds, MiB as bytes); none is a policy.
_LIMITS: Final = {
    "retention_days": 36_500.0,
    "min_free_mib": 16.0 * 1024 * 1024,
    "incoming_max_age_days": 36_500.0,
}


@dataclass(frozen=True)
class StoreConfig:
    """What ``store.toml`` holds (each value validated: finite and positive)."""

    retention_days: float = 31.0  # an unflagged clip is kept this long after verification
    min_free_mib: float = 256.0  # the dock never fills its file system beyond this reserve
    incoming_max_age_days: float = 7.0  # prune removes transfers untouched for this long

    @property
    def min_free_bytes(self) -> int:
        """``min_free_mib`` in bytes."""
        return int(self.min_free_mib * 1024 * 1024)

    def to_toml(self) -> str:
        """The file's text, with a comment per key."""
        return (
            "# bodycam dock store settings (docs/dock-store.md)\n"
            "# days an unflagged clip is kept after it was verified\n"
            f"retention_days = {self.retention_days!r}\n"
            "# MiB the dock always leaves free on the store's file system\n"
            f"min_free_mib = {self.min_free_mib!r}\n"
            "# days after which an untouched transfer in incoming/ is removed by prune\n"
            f"incoming_max_age_days = {self.incoming_max_age_days!r}\n"
        )


def check_value(key: str, value: object, source: str) -> float:
    """A setting as a float, or the one-line error naming ``key`` (and where it came from).

    Raises:
        StoreError: Not a number, not finite, not positive, or absurdly large.
    """
    from bodycam.dock.store import StoreError  # store.py imports this module

    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StoreError(f"{source}: {key} must be a number, not {value!r}")
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise StoreError(f"{source}: {key} must be a finite number above 0, not {value!r}")
    if number > _LIMITS[key]:
        raise StoreError(f"{source}: {key} = {value!r} is too large (at most {_LIMITS[key]:g})")
    return number


def load_config(root: Path) -> StoreConfig:
    """Read ``<root>/store.toml``; the defaults when there is none.

    Raises:
        StoreError: Unreadable, not TOML, an unknown key, or a bad value (named).
    """
    from bodycam.dock.store import StoreError

    path = root / CONFIG_NAME
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return StoreConfig()
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise StoreError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a settings file")
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise StoreError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(table) - set(_LIMITS))
    if unknown:
        raise StoreError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(_LIMITS)})")
    values = {key: check_value(key, table[key], str(path)) for key in _LIMITS if key in table}
    return StoreConfig(**values)


def write_config(root: Path, config: StoreConfig) -> Path:
    """Write ``store.toml`` durably; never over an existing one.

    Raises:
        EvidenceError: The file exists already.
        OSError: It cannot be written.
    """
    path = root / CONFIG_NAME
    try:
        write_file_durably(path, config.to_toml().encode(), mode=0o644, overwrite=False)
    except EvidenceError:
        from bodycam.dock.store import StoreError

        raise StoreError(f"{path}: exists already; edit it instead") from None
    return path


def create_layout(root: Path, config: StoreConfig, custody_name: str) -> None:
    """Create the store's directories, ``store.toml`` (if missing) and an empty custody log.

    The log comes last: a directory holding it is a store, so a power cut part way leaves
    something ``init`` (or the dock) simply completes.

    Raises:
        StoreError: ``root`` is not a directory, or something cannot be created.
    """
    from bodycam.dock.store import StoreError

    try:
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root}: exists and is not a directory")
        if not root.is_dir():
            root.mkdir(mode=0o700, parents=True)
            fsync_dir(root.parent)
        for part in ("devices", "incoming", "clips", "quarantine"):
            ensure_dir(root / part)
        if not (root / CONFIG_NAME).exists():
            write_config(root, config)
        create_empty_file(root / custody_name)
    except OSError as exc:
        raise StoreError(f"{root}: cannot create the store: {exc.strerror}") from None
    _log.info("created dock store %s", root)
