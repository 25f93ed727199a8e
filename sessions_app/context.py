"""Template context for every console page: the signed-in technician's follow-ups that are due."""

from __future__ import annotations

from typing import Any

from sessions_app.selectors.followups import follow_ups_due_count


def follow_ups_due(request) -> dict[str, Any]:
    """One count query per page for a member (the tenant is bound by the console middleware)."""
    if getattr(request, "membership", None) is None or not request.user.is_authenticated:
        return {}
    return {"follow_ups_due": follow_ups_due_count(assigned_to_id=request.user.pk)}
