"""The evidence store's one exception type.

Every message is meant for a person: it names the file (and the segment or line) and what is
wrong with it, because the CLI prints ``str(exc)`` and nothing else.
"""

from __future__ import annotations


class EvidenceError(Exception):
    """Footage, a key or a clip directory cannot be used; the message says which and why."""
