"""Telemetry to the force's MQTT broker: retained state, ordered events, last will.

The daemon, the dock and the fleet simulator use :class:`Telemetry`; consumers (the fleet
summary view) use :mod:`.topics` and :mod:`.payloads` to read what arrives.
"""

from bodycam.daemon.telemetry.broker import BrokerAddress, parse_broker_url
from bodycam.daemon.telemetry.payloads import PayloadError
from bodycam.daemon.telemetry.publisher import Telemetry, TelemetrySettings, TelemetryStats
from bodycam.daemon.telemetry.queue import EventQueue, QueuedEvent
from bodycam.daemon.telemetry.topics import CameraTopics, DockTopics, TopicSet, validate_id

__all__ = [
    "BrokerAddress",
    "CameraTopics",
    "DockTopics",
    "EventQueue",
    "PayloadError",
    "QueuedEvent",
    "Telemetry",
    "TelemetrySettings",
    "TelemetryStats",
    "TopicSet",
    "parse_broker_url",
    "validate_id",
]
