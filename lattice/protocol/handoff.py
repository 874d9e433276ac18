"""The link hand-off, pure: who is told what, and what a caller does after a miss.

docs/protocol.md ("Link hand-off") gives the whole sequence. This module holds the two
decisions in it that need no I/O, so they are tested without NATS:

- `notices(old, new, running)`: for a link change seen by one host, which of the
  providers it runs get `linkdefs.put` and which `linkdefs.del`. Every party to the new
  link (target or source) is told first; parties to the old link only are told to let it
  go, and drain it before they forget it.
- `after_miss(...)`: a source's call came back `not-linked` (the target holds no such
  link and did nothing) or "no responders"; given the link as the KV bucket holds it now,
  send again (where), wait and send again, or fail (why). Only these two outcomes prove a
  call was not applied, so only they are ever re-sent.

What it never does: decide anything on a timeout or any other error (those are the
call's outcome), or touch NATS.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from lattice.protocol.links import Link

RETRY_FIRST_WAIT = 0.025  # seconds before asking a target again after `not-linked`
RETRY_MAX_WAIT = 0.4
MAX_RESENDS = 8  # a bound even when the deadline is long: a link that flaps forever fails


class Verb(StrEnum):
    PUT = "put"
    DEL = "del"


@dataclass(frozen=True, slots=True)
class Notice:
    """Tell provider `provider_id` to put `link` in force, or to drain and drop it."""

    provider_id: str
    verb: Verb
    link: Link


def parties(link: Link | None, running: Collection[str]) -> set[str]:
    """The providers among `running` that are the link's target or source."""
    if link is None:
        return set()
    return {p for p in (link.target, link.source_id) if p in running}


def notices(old: Link | None, new: Link | None, running: Collection[str]) -> list[Notice]:
    """What one host tells the providers it runs about a link change, in order.

    Puts come first so that, on a host that runs both the old and the new target, the new
    one holds the link before the old one starts draining it.
    """
    after = parties(new, running)
    before = parties(old, running)
    out: list[Notice] = []
    if new is not None:
        out += [Notice(p, Verb.PUT, new) for p in sorted(after)]
    if old is not None:
        out += [Notice(p, Verb.DEL, old) for p in sorted(before - after)]
    return out


class Miss(StrEnum):
    """Why a call came back without being applied."""

    NOT_LINKED = "not-linked"  # the target answered: it holds no such link
    NO_RESPONDERS = "no-responders"  # nobody serves the target's subject


@dataclass(frozen=True, slots=True)
class Resend:
    """Send the call again to `link.target` after `wait` seconds."""

    link: Link
    wait: float


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str


def after_miss(
    sent_to: str,
    miss: Miss,
    fresh: Link | None,
    interface: str,
    attempt: int,
    remaining: float,
) -> Resend | Fail:
    """The next step for a call that `sent_to` did not apply.

    `fresh` is the link as the KV bucket holds it now (None: deleted), `attempt` counts
    the sends so far (1 after the first), `remaining` the seconds left of the call's own
    deadline.
    """
    if fresh is None or interface not in fresh.interfaces:
        return Fail("no link (it was deleted while the call was on its way)")
    if attempt >= MAX_RESENDS:
        return Fail(f"the link kept moving: {attempt} sends, last to {sent_to}")
    if fresh.target != sent_to:
        return Resend(fresh, 0.0)  # the link moved: the new target gets the call at once
    if miss is Miss.NO_RESPONDERS:
        return Fail(f"target {sent_to} is not running (nobody answers)")
    wait = min(RETRY_FIRST_WAIT * (2 ** (attempt - 1)), RETRY_MAX_WAIT)
    if wait >= remaining:
        return Fail(f"target {sent_to} does not hold the link yet (asked {attempt} times)")
    return Resend(fresh, wait)
