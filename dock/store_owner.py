"""Who runs a ``bodycam store`` command: whether they may change the store, and their name.

A dock host runs its agent as ``bodycam-dock``, which owns the store. Every file the store
writes is mode 0600 and many are new files (a key in ``devices/``, the custody head replaced
by rename, a quarantined or exported clip's directory), so a change made as any other user,
root above all, leaves files the agent cannot read, and the next docking fails. The
``bodycam store`` commands that change a store therefore run only as the store's owner, and
say how in one line; commands that only read (``list``, ``log``) run as anyone who can read.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from bodycam.dock.store_records import StoreError

__all__ = ["Owner", "default_user", "owner_of", "refusal", "require_owner", "require_readable"]


@dataclass(frozen=True)
class Owner:
    """A store root's owner: its uid and, when the system knows it, its user name."""

    uid: int
    name: str


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry (a container): sudo takes "#uid"
        return f"#{uid}"


def owner_of(root: Path) -> Owner | None:
    """The owner of directory ``root``, or None when it is missing or not a directory.

    None leaves the verdict to opening the store, which names the problem (no such store).
    """
    try:
        st = Path(root).stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return Owner(st.st_uid, _user_name(st.st_uid))


def refusal(root: Path, command: str, *, euid: int, owner: Owner) -> str | None:
    """Why user ``euid`` must not run the changing ``command`` on ``root``; None if it may.

    Only the owner may: root is not exempt, since root's new files are root's, mode 0600,
    and the agent (the owner) could not read them.

    Returns:
        One line naming the owner and the command to run instead, or None.
    """
    if euid == owner.uid:
        return None
    user = shlex.quote(owner.name)
    me = _user_name(euid)
    me = f"uid {euid}" if me.startswith("#") else me
    return (
        f"{root} belongs to {owner.name}, not {me}; run: sudo -u {user} bodycam store {command} ..."
    )


def require_owner(root: Path, command: str, *, euid: int | None = None) -> None:
    """Refuse (:class:`StoreError`) to change ``root`` unless ``euid`` owns it.

    Args:
        root: The store directory (``--store``).
        command: The subcommand, for the suggested fix (``enrol``, ``flag``, ...).
        euid: The effective uid to judge (default: this process's).

    Raises:
        StoreError: ``root`` exists and belongs to another user.
    """
    owner = owner_of(root)
    if owner is None:
        return
    reason = refusal(root, command, euid=os.geteuid() if euid is None else euid, owner=owner)
    if reason is not None:
        raise StoreError(reason)


def require_readable(root: Path, command: str) -> None:
    """Refuse (:class:`StoreError`) to read ``root`` that this user may not list or enter.

    Without it, a store the user cannot read looks like no store at all ("no
    custody.jsonl"), which sends an operator after the wrong problem.
    """
    owner = owner_of(root)
    effective = os.access in os.supports_effective_ids
    if owner is None or os.access(root, os.R_OK | os.X_OK, effective_ids=effective):
        return
    user = shlex.quote(owner.name)
    raise StoreError(
        f"{root} belongs to {owner.name} and this user cannot read it; "
        f"run: sudo -u {user} bodycam store {command} ..."
    )


def default_user() -> str:
    """The login name, for ``--by`` (``unknown`` when the system cannot tell)."""
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        return "unknown"
