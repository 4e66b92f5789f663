"""The telemetry topic tree: ``bodycam/v1/{camera,dock}/<id>/...``, built and parsed.

The protocol version is part of every topic, so a consumer of ``v1`` never receives a
``v2`` payload it cannot read, and both versions can share one broker during an upgrade.
Ids become topic levels only after :func:`validate_id`: an id holding ``+``, ``#`` or ``/``
would let one device write where another's messages live (or be matched by wildcards).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Protocol

PROTOCOL = "bodycam/v1"
ALL = f"{PROTOCOL}/#"
"""Subscribe here to see everything (the monitoring view, ``mosquitto_sub``)."""
CAMERA_STATES = f"{PROTOCOL}/camera/+/state"
CAMERA_ONLINE = f"{PROTOCOL}/camera/+/online"
CAMERA_EVENTS = f"{PROTOCOL}/camera/+/event"
DOCK_ALL = f"{PROTOCOL}/dock/#"

_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

Role = Literal["camera", "dock"]
Channel = Literal["state", "event", "online", "progress", "bay"]
_CHANNELS: dict[str, Channel] = {
    "state": "state",
    "event": "event",
    "online": "online",
    "progress": "progress",
}


def validate_id(value: str, what: str = "device id") -> str:
    """Return ``value`` if it is safe as one topic level, else raise ``ValueError``.

    Safe means 1-64 characters of ``A-Z a-z 0-9 . _ -``: no MQTT wildcard, no level
    separator, nothing a broker ACL pattern (``%u``) would treat specially.
    """
    if not isinstance(value, str) or _ID.fullmatch(value) is None:
        raise ValueError(
            f"{what} {value!r} cannot be used in a topic: "
            "use 1-64 characters from A-Z a-z 0-9 . _ -"
        )
    return value


class TopicSet(Protocol):
    """The topics one publisher (a camera or a dock) writes to."""

    @property
    def root(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def online(self) -> str: ...
    @property
    def progress(self) -> str: ...


class _PublisherTopics:
    """The topics under ``bodycam/v1/<role>/<id>``, shared by cameras and docks."""

    role: Role

    @property
    def publisher_id(self) -> str:
        raise NotImplementedError

    @property
    def root(self) -> str:
        """Everything this publisher may write is below this level."""
        return f"{PROTOCOL}/{self.role}/{self.publisher_id}"

    @property
    def state(self) -> str:
        """Retained JSON: the latest state."""
        return f"{self.root}/state"

    @property
    def event(self) -> str:
        """JSON events, in order, not retained."""
        return f"{self.root}/event"

    @property
    def online(self) -> str:
        """Retained ``1``/``0``; ``0`` is also the last will."""
        return f"{self.root}/online"

    @property
    def progress(self) -> str:
        """Latest offload progress, QoS 0, not retained."""
        return f"{self.root}/progress"


@dataclass(frozen=True)
class CameraTopics(_PublisherTopics):
    """Topics of one camera: ``bodycam/v1/camera/<device_id>/...``."""

    device_id: str
    role: Role = field(default="camera", init=False)

    def __post_init__(self) -> None:
        validate_id(self.device_id, "device id")

    @property
    def publisher_id(self) -> str:
        return self.device_id


@dataclass(frozen=True)
class DockTopics(_PublisherTopics):
    """Topics of one dock: ``bodycam/v1/dock/<dock_id>/...``, with one retained topic per bay."""

    dock_id: str
    role: Role = field(default="dock", init=False)

    def __post_init__(self) -> None:
        validate_id(self.dock_id, "dock id")

    @property
    def publisher_id(self) -> str:
        return self.dock_id

    def bay(self, bay: int | str) -> str:
        """Retained JSON: what is in bay ``bay`` (its number or name) and how far it got."""
        return f"{self.root}/bay/{validate_id(str(bay), 'bay')}"


@dataclass(frozen=True)
class TopicInfo:
    """What a received topic says: who sent it and on which channel."""

    role: Role
    id: str
    channel: Channel
    bay: str | None = None


def parse_topic(topic: str) -> TopicInfo:
    """Split a ``bodycam/v1`` topic into its parts; ``ValueError`` for anything else.

    Consumers (the fleet summary view) call this on every message: a topic that is not
    ours, or carries an unsafe id, is refused here rather than trusted further on.
    """
    levels = topic.split("/") if isinstance(topic, str) else []
    if len(levels) < 5 or "/".join(levels[:2]) != PROTOCOL or levels[2] not in ("camera", "dock"):
        raise ValueError(f"not a {PROTOCOL} topic: {topic!r}")
    role: Role = "camera" if levels[2] == "camera" else "dock"
    ident = validate_id(levels[3], f"{role} id")
    rest = levels[4:]
    if len(rest) == 1 and rest[0] in _CHANNELS:
        return TopicInfo(role, ident, _CHANNELS[rest[0]])
    if role == "dock" and len(rest) == 2 and rest[0] == "bay":
        return TopicInfo(role, ident, "bay", validate_id(rest[1], "bay"))
    raise ValueError(f"unknown {PROTOCOL} channel in topic {topic!r}")
