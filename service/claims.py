"""Pure: what the deliverer's next claim of due deliveries may take, and whether one is worth
making, from the per-host and per-tenant limits' room (`service.slots`).

A claim takes for each host and each tenant only what it has room for, running or waiting
(none for one whose line is full), so that a host or a tenant with a large backlog neither
fills the deliverer nor hides the others' due deliveries. Each claim is a store write, so a
line is topped up once two thirds of it are free, not at every attempt; and a claim is made
between the periodic ones only where the last claim suggests the store has more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from service.slots import Limit, Slots


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """What the next claim of due deliveries may take (see `Store.claim_deliveries`)."""

    limit: int
    per_host: int  # for a host not in `host_limits`
    host_limits: dict[str, int]  # room left per busy host; 0: claim none
    per_tenant: int  # for a tenant not in `tenant_limits`
    tenant_limits: dict[str, int]  # room left per busy tenant; 0: claim none


def plan(slots: Slots[Any], free: int) -> ClaimPlan:
    """As many as there are `free` slots; for each busy host and tenant what it has room for,
    the limit of its kind for any other."""
    hosts, tenants = slots.hosts, slots.tenants
    return ClaimPlan(max(free, 0), hosts.per_key, hosts.limits(), tenants.per_key, tenants.limits())


class Leftovers:
    """What the last claim suggests is left in the store: more for some hosts and tenants
    (each got all it had room for, or none because it had no room), more for anyone (the
    claim was cut by its limit)."""

    def __init__(self) -> None:
        self._hosts: set[str] = set()
        self._tenants: set[str] = set()
        self._any = False

    def claimed(self, plan: ClaimPlan, keys: Iterable[tuple[str, str]]) -> None:
        """A claim made with `plan` got deliveries of these (host, tenant) keys."""
        got = list(keys)
        got_hosts = Counter(host for host, _ in got)
        got_tenants = Counter(tenant for _, tenant in got)
        self._hosts = _more_for(plan.host_limits, plan.per_host, got_hosts)
        self._tenants = _more_for(plan.tenant_limits, plan.per_tenant, got_tenants)
        self._any = plan.limit > 0 and len(got) >= plan.limit

    def worth_claiming(self, slots: Slots[Any], host: str, tenant: str) -> bool:
        """Whether a claim now would likely find work after an attempt to `host` of `tenant`
        ended: the store has more for that host (or tenant) and it has room for a third of its
        line, or the last claim was cut short by its limit."""
        hosts, tenants = slots.hosts, slots.tenants
        if host in self._hosts and hosts.room(host) >= _top_up(hosts):
            return True
        if tenant in self._tenants and tenants.room(tenant) >= _top_up(tenants):
            return True
        return self._any


def _more_for(limits: Mapping[str, int], default: int, got: Counter[str]) -> set[str]:
    """The hosts (or tenants) a claim with these limits suggests the store has more for: those
    it had no room for, and those that got all they had room for."""
    found = {key for key, room in limits.items() if room <= 0}
    found.update(key for key, n in got.items() if n >= limits.get(key, default))
    return found


def _top_up(limit: Limit[Any]) -> int:
    # A line is topped up once two thirds of it are free.
    return (limit.capacity - limit.per_key) * 2 // 3 or 1
