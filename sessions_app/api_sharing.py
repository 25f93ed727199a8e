"""The REST API of the review step and share links (/api/v1/sessions/{id}/review/ and .../share-links/).

The same services as the console (sessions_app/services/review.py, sharing.py), so the same
rule: a link needs a record marked reviewed unless the tenant's admin turned that off; without
one the API answers 400 ``rejected`` with the service's message and creates nothing. The token
of a new link is in the response, once; only its hash is stored.
"""

from __future__ import annotations

from datetime import timedelta

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from caisey.api import parse_uuid
from endpoints import access
from sessions_app.api import ERRORS, APIViewSet
from sessions_app.forms.sharing import DEFAULT_EXPIRY_DAYS
from sessions_app.models import SupportSession
from sessions_app.selectors import sessions as selectors
from sessions_app.selectors.review import review_status
from sessions_app.services import review, sharing
from sessions_app.views.share import share_url

SESSION_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="session id")


class ReviewOut(serializers.Serializer):
    reviewed_by = serializers.CharField(help_text="the reviewer's name, as the record names them")
    reviewed_at = serializers.DateTimeField()
    upto = serializers.IntegerField(help_text="the last transcript entry reviewed")


class ShareLinkIn(serializers.Serializer):
    expires_in_days = serializers.IntegerField(
        required=False,
        default=DEFAULT_EXPIRY_DAYS,
        min_value=1,
        max_value=sharing.MAX_EXPIRY.days,
    )
    label = serializers.CharField(required=False, default="", allow_blank=True, max_length=sharing.LABEL_MAX_LENGTH)


class ShareLinkOut(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField(help_text="the client's link; shown once, never stored")
    expires_at = serializers.DateTimeField()
    label = serializers.CharField()


class SessionSharingViewSet(APIViewSet):
    """The review step and share links of a session's record."""

    model = SupportSession

    def scoped_queryset(self):
        return selectors.session_list()

    @extend_schema(
        summary="Mark the session's record reviewed (the review step before sharing)",
        parameters=[SESSION_ID],
        request=None,
        responses={201: ReviewOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def review(self, request, pk=None):
        session = selectors.session_get(session_id=parse_uuid(pk))
        entry = review.record_review_complete(actor=request.user, session=session)
        status_ = review_status(session=session)
        data = {"reviewed_by": status_.reviewed_by, "reviewed_at": status_.reviewed_at, "upto": entry.data["upto"]}
        return Response(ReviewOut(data).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Create a share link to the session's reviewed record",
        parameters=[SESSION_ID],
        request=ShareLinkIn,
        responses={201: ShareLinkOut, **ERRORS},
    )
    @action(detail=True, methods=["post"], url_path="share-links")
    def share_links(self, request, pk=None):
        session = selectors.session_get(session_id=parse_uuid(pk))
        body = ShareLinkIn(data=request.data)
        body.is_valid(raise_exception=True)
        link, token = sharing.share_link_create(
            actor=request.user,
            session=session,
            expires_in=timedelta(days=body.validated_data["expires_in_days"]),
            label=body.validated_data["label"],
            step_up=access.api_step_up(request, risky=True),
        )
        data = {"id": link.pk, "url": share_url(request, token), "expires_at": link.expires_at, "label": link.label}
        return Response(ShareLinkOut(data).data, status=status.HTTP_201_CREATED)
