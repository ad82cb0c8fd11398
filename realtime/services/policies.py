"""Row and channel policies: who may see which rows and private topics."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from audit.models import EventType
from audit.services import activity_record
from realtime.models import ChannelPolicy, RowPolicy, Tenant


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
    policy_save(policy=policy, actor=actor)
    return policy


def _policy_details(policy: RowPolicy | ChannelPolicy) -> dict[str, Any]:
    if isinstance(policy, RowPolicy):
        return {"kind": "row", "role": policy.role, "rules": policy.rules}
    return {
        "kind": "channel",
        "role": policy.role,
        "extension": policy.extension,
        "read": policy.read,
        "write": policy.write,
    }


def _policy_target(policy: RowPolicy | ChannelPolicy) -> str:
    return policy.table if isinstance(policy, RowPolicy) else policy.pattern


def policy_save(*, policy: RowPolicy | ChannelPolicy, actor: str = "") -> None:
    """Create or change a row or channel policy (the admin's edits), logged.

    The fan-out re-reads a tenant's policies within a few seconds
    (realtime.hub.POLICY_TTL): an edit reaches open sockets without a restart.
    """
    policy.full_clean()
    with transaction.atomic():
        policy.save()
        activity_record(
            event_type=EventType.POLICY_CHANGED,
            tenant=policy.tenant,
            actor=actor,
            target=_policy_target(policy),
            details={**_policy_details(policy), "id": policy.pk},
        )


def policy_delete(*, policy: RowPolicy | ChannelPolicy, actor: str = "") -> None:
    """Delete a row or channel policy, logged with what it allowed."""
    with transaction.atomic():
        details = {**_policy_details(policy), "id": policy.pk}
        policy.delete()
        activity_record(
            event_type=EventType.POLICY_DELETED,
            tenant=policy.tenant,
            actor=actor,
            target=_policy_target(policy),
            details=details,
        )
