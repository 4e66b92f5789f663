"""The camera's listing: every LIST page fetched within bounds, every entry screened.

A LIST_REPLY is the first thing a camera says about its clips, and all of it is input from
the link: how many pages, how many entries, each name and each size. This module reads the
listing with the page and entry caps of :mod:`bodycam.dock.limits` (a camera that keeps
paging is cut off, so the dock's memory stays bounded), then sorts the entries into the
ones worth pulling and the ones refused before a byte is fetched: a name that fails the
store's own name rule (checked here, before any path is built from it), a clip id or name
listed twice, or a size the evidence format does not allow. A refused clip is a custody
entry and an outcome in the report; it stays on the camera.
"""

from __future__ import annotations

import logging

from bodycam.dock import limits
from bodycam.dock.report import REFUSED, ClipOutcome, DockRefused
from bodycam.dock.store import DockStore, StoreError, check_name
from bodycam.drivers.link.endpoint import Requester
from bodycam.drivers.link.messages import ClipEntry, ListClips, ListReply

__all__ = ["Refusal", "display_name", "list_clips", "refuse", "screen"]

_log = logging.getLogger(__name__)

# A listed entry and why it is refused.
Refusal = tuple[ClipEntry, list[str]]


async def list_clips(requester: Requester) -> list[ClipEntry]:
    """Every page of the camera's listing, bounded in pages and entries.

    Raises:
        DockRefused: The camera sent something other than LIST_REPLY, a page larger than
            asked for, more than :data:`limits.MAX_LIST_ENTRIES` entries, more than
            :data:`limits.MAX_LIST_PAGES` pages, or a cursor that did not advance.
    """
    entries: list[ClipEntry] = []
    cursor = 0
    for _ in range(limits.MAX_LIST_PAGES):
        page = await requester.call(ListClips(cursor=cursor, max_entries=limits.LIST_PAGE))
        if not isinstance(page, ListReply):
            raise DockRefused(f"expected ListReply, camera sent {type(page).__name__}")
        if len(page.entries) > limits.LIST_PAGE:
            raise DockRefused(
                f"camera sent a LIST page of {len(page.entries)} entries "
                f"(asked for {limits.LIST_PAGE})"
            )
        entries.extend(page.entries)
        if len(entries) > limits.MAX_LIST_ENTRIES:
            raise DockRefused(
                f"camera listed more than {limits.MAX_LIST_ENTRIES} clips; listing cut off"
            )
        if page.next_cursor == 0:
            return entries
        if page.next_cursor <= cursor:
            raise DockRefused("camera's LIST cursor did not advance")
        cursor = page.next_cursor
    raise DockRefused(f"camera kept paging its listing past {limits.MAX_LIST_PAGES} pages; cut off")


def screen(entries: list[ClipEntry]) -> tuple[list[ClipEntry], list[Refusal]]:
    """Split ``entries`` into those worth pulling and those refused (with their problems).

    Both keep the listing's order. Only a kept entry's name may become a path.
    """
    dup_ids, dup_names = limits.duplicates(entries)
    kept: list[ClipEntry] = []
    refused: list[Refusal] = []
    for entry in entries:
        problems: list[str] = []
        try:
            check_name(entry.name, "clip name")
        except StoreError as exc:
            problems.append(str(exc))  # the store's message shows the name as a repr
        if entry.clip_id in dup_ids:
            problems.append("clip id listed more than once")
        if entry.name in dup_names:
            problems.append("clip name listed more than once")
        problems += limits.entry_problems(entry)
        if problems:
            refused.append((entry, problems))
        else:
            kept.append(entry)
    return kept, refused


def refuse(store: DockStore, device_id: str, entry: ClipEntry, problems: list[str]) -> ClipOutcome:
    """Log a clip refused before any fetch (custody kind ``refused``); its outcome.

    ``device_id`` must have passed the store's name rule (the session checked it at HELLO).
    """
    clip_id = entry.clip_id.hex()
    _log.error("camera %s: clip %s refused: %s", device_id, clip_id, "; ".join(problems))
    store.refuse(device_id, clip_id, entry.name, problems)
    return ClipOutcome(
        clip_id, display_name(entry.name), REFUSED, entry.total_bytes, problems=problems
    )


def display_name(name: str) -> str:
    """``name`` if it passes the store's name rule, else its repr cut to 80 characters.

    The name may be anything a camera sent: only a safe form reaches a screen or a log.
    """
    try:
        return check_name(name, "clip name")
    except StoreError:
        return repr(name)[:80]
