"""The deny-list entries of revoked personal passes (what every venue's deny list adds)."""

from __future__ import annotations

from backoffice.personal.models import PersonalPass
from firmware.core.policy import REVOKED_PASS_PREFIX


def revoked_ids(now_s: float) -> list[str]:
    """``pass:<cti hex>`` of each revoked pass that has not expired yet (an expired pass is
    refused anyway, so the lists do not grow for ever)."""
    tokens = (PersonalPass.objects.filter(revoked_s__isnull=False, expires_s__gt=now_s)
              .order_by("token_id").values_list("token_id", flat=True))
    return [REVOKED_PASS_PREFIX + t for t in tokens]
