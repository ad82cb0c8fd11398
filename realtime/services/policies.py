"""Channel policies: who may read or write private topics."""

from __future__ import annotations

from django.db import transaction

from audit.models import EventType
from audit.services import activity_record
from realtime.models import ChannelPolicy, Tenant


def channel_policy_add(
    *,
    tenant: Tenant,
    pattern: str,
    role: str = "",
    extension: str = ChannelPolicy.Extension.ANY,
    read: bool = True,
    write: bool = False,
    actor: str = "",
) -> ChannelPolicy:
    """Let `role` (blank: any) read and/or write private topics matching `pattern`."""
    policy = ChannelPolicy(
        tenant=tenant,
        pattern=pattern,
        role=role,
        extension=extension,
        read=read,
        write=write,
    )
    policy.full_clean()
    with transaction.atomic():
        policy.save()
        activity_record(
            event_type=EventType.POLICY_CHANGED,
            tenant=tenant,
            actor=actor,
            target=pattern,
            details={
                "kind": "channel",
                "role": role,
                "extension": extension,
                "read": read,
                "write": write,
                "id": policy.pk,
            },
        )
    return policy
