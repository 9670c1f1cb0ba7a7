"""The lifespan's state (`service.app`): the services the handlers and the dashboard use, each
by name. A handler takes `Request[State]` and reads what it needs (`request.state["watches"]`)."""

from __future__ import annotations

from typing import TypedDict

from service.auth import Access
from service.event_feed import EventFeed
from service.generate import GenerateService
from service.monitor import Monitor
from service.redelivery import RedeliveryService
from service.sign_outs import SignOuts
from service.streams import OpenStreams
from service.subscriptions import SubscriptionService
from service.watches import WatchService


class State(TypedDict):
    access: Access
    watches: WatchService
    redelivery: RedeliveryService
    generation: GenerateService
    subscriptions: SubscriptionService
    feed: EventFeed
    streams: OpenStreams  # held by API clients and dashboards, per tenant
    monitor: Monitor
    sign_outs: SignOuts
