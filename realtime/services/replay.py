"""Storing broadcasts for replay (writes; realtime/replay_selectors.py reads).

A broadcast to a private topic is written to `herald_messages` before it is
sent, so that its id (drawn in the tenant's commit order, see
realtime/capture/messages.py) travels with it as `meta.id` and a later join
can replay it. `sent_live` tells the relay Herald sent it already.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from realtime.models import HeraldMessage, Tenant


def broadcast_store(*, tenant: Tenant, topic: str, event: str, payload: Any) -> int:
    """Store one private broadcast (already checked and sized); return its id."""
    with transaction.atomic():
        message = HeraldMessage.objects.create(
            tenant_slug=tenant.slug,
            topic=topic,
            event=event,
            payload=payload,
            private=True,
            sent_live=True,
        )
    return int(message.pk)


def broadcasts_store(
    *, tenant: Tenant, messages: list[tuple[str, str, Any]]
) -> list[int]:
    """Store several (topic, event, payload), one transaction; their ids in order."""
    with transaction.atomic():
        return [
            int(
                HeraldMessage.objects.create(
                    tenant_slug=tenant.slug,
                    topic=topic,
                    event=event,
                    payload=payload,
                    private=True,
                    sent_live=True,
                ).pk
            )
            for topic, event, payload in messages
        ]
