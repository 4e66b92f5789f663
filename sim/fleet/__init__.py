"""Fleet simulation: thousands of light cameras publishing telemetry to one MQTT broker.

Each camera runs the daemon's own ``StateMachine`` and ``Telemetry``; video is not encoded
(clip bytes come from the configured bitrate), so 22,000 cameras fit on a small machine.

- ``scenario``: fleet scenario files (``sim/scenarios/fleet-*.toml``).
- ``shift``: each camera's shift drawn from the scenario, reproducibly; shards.
- ``camera`` and ``model``: the light camera, its battery and card.
- ``scheduler``: one clock and one timer heap for all cameras.
- ``runner``: a fleet (or shard) with its connections and totals.
- ``view``: the dashboard's summary, computed from a subscriber.
- ``cli``: ``bodycam fleet``.

Nothing is imported here, so ``bodycam``'s parser can register ``fleet`` without loading
MQTT.
"""
