"""The REST API of the review step, redactions and share links (/api/v1/sessions/{id}/review/,
.../redactions/, .../share-links/, /api/v1/share-links/{id}/ and its revoke).

The same services as the console (sessions_app/services/review.py, sharing.py), so the same
rule: a link needs a record marked reviewed unless the tenant's admin turned that off; without
one the API answers 400 ``rejected`` with the service's message and creates nothing. The token
of a new link is in the response, once; only its hash is stored.
"""

from __future__ import annotations

from datetime import timedelta

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from caisey.api import parse_uuid
from endpoints import access
from sessions_app.api import ERRORS, READ_ERRORS, APIViewSet, _invalid
from sessions_app.forms.sharing import DEFAULT_EXPIRY_DAYS
from sessions_app.models import ShareLink, SupportSession, TranscriptEntry
from sessions_app.selectors import sessions as selectors
from sessions_app.selectors import sharing as sharing_selectors
from sessions_app.selectors.review import review_status
from sessions_app.services import review, sharing
from sessions_app.services.review import FRAGMENT_MAX_LENGTH
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


class RedactionIn(serializers.Serializer):
    scope = serializers.ChoiceField(
        choices=["entry", "session"],
        required=False,
        default="entry",
        help_text="entry: one transcript entry (whole, or a piece of its text); session: a piece of text everywhere",
    )
    entry = serializers.IntegerField(required=False, min_value=0, help_text="the entry's index (scope entry)")
    whole = serializers.BooleanField(required=False, default=False, help_text="redact the whole entry")
    # Not trimmed: the exact text is what gets redacted (a password may end with a space).
    fragment = serializers.CharField(
        required=False, allow_blank=True, trim_whitespace=False, max_length=FRAGMENT_MAX_LENGTH, default=""
    )

    def validate(self, attrs):
        # The console form's rules (sessions_app/forms/review.py RedactForm).
        if attrs["scope"] == "session":
            if not attrs["fragment"].strip():
                raise serializers.ValidationError("give the text to redact")
        else:
            if attrs.get("entry") is None:
                raise serializers.ValidationError("choose the entry to redact")
            if not attrs["whole"] and not attrs["fragment"]:
                raise serializers.ValidationError("give the text to redact, or redact the whole entry")
        return attrs


class RedactionOut(serializers.Serializer):
    index = serializers.IntegerField(help_text="the review.redaction entry written")
    entry = serializers.IntegerField(help_text="the entry it redacts")
    whole = serializers.BooleanField()
    occurrences = serializers.IntegerField(allow_null=True)


def _redaction_data(entry: TranscriptEntry) -> dict:
    return {
        "index": entry.index,
        "entry": entry.data["index"],
        "whole": entry.data["whole"],
        "occurrences": entry.data.get("occurrences"),
    }


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
        summary="Redact an entry (whole, or a piece of its text) or a piece of text everywhere in the record",
        parameters=[SESSION_ID],
        request=RedactionIn,
        responses={201: RedactionOut(many=True), **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def redactions(self, request, pk=None):
        session = selectors.session_get(session_id=parse_uuid(pk))
        body = RedactionIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        if data["scope"] == "session":
            written = review.session_redact_fragment(
                actor=request.user, session=session, text_fragment=data["fragment"]
            )
        else:
            entry = TranscriptEntry.objects.filter(session=session, index=data["entry"]).first()
            if entry is None:
                return _invalid("entry", "no such entry in this session")
            written = [
                review.entry_redact(
                    actor=request.user,
                    session=session,
                    entry=entry,
                    text_fragment=None if data["whole"] else data["fragment"],
                )
            ]
        return Response(
            RedactionOut([_redaction_data(e) for e in written], many=True).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        summary="Create a share link to the session's reviewed record",
        parameters=[SESSION_ID],
        request=ShareLinkIn,
        responses={201: ShareLinkOut, **ERRORS},
    )
    @action(detail=True, methods=["post"], url_path="share-links")
    def share_links(self, request, pk=None):
        return share_link_created(request, session=selectors.session_get(session_id=parse_uuid(pk)))


def share_link_created(request, *, session: SupportSession | None = None, incident=None) -> Response:
    """A share link to a session's or an incident's record from the request's body (the API's two
    share-links operations): the console's rules and step-up, its token in this answer only."""
    body = ShareLinkIn(data=request.data)
    body.is_valid(raise_exception=True)
    link, token = sharing.share_link_create(
        actor=request.user,
        session=session,
        incident=incident,
        expires_in=timedelta(days=body.validated_data["expires_in_days"]),
        label=body.validated_data["label"],
        step_up=access.api_step_up(request, risky=True),
    )
    data = {"id": link.pk, "url": share_url(request, token), "expires_at": link.expires_at, "label": link.label}
    return Response(ShareLinkOut(data).data, status=status.HTTP_201_CREATED)


class ShareLinkStateOut(serializers.Serializer):
    id = serializers.UUIDField()
    session = serializers.UUIDField(allow_null=True)
    incident = serializers.UUIDField(allow_null=True)
    label = serializers.CharField()
    created_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    revoked_by = serializers.CharField(allow_null=True)


def _link_data(link: ShareLink) -> dict:
    return {
        "id": link.pk,
        "session": link.session_id,
        "incident": link.incident_id,
        "label": link.label,
        "created_by": link.created_by.get_username(),
        "created_at": link.created_at,
        "expires_at": link.expires_at,
        "revoked_at": link.revoked_at,
        "revoked_by": link.revoked_by.get_username() if link.revoked_by else None,
    }


LINK_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="share link id")


@extend_schema_view(
    retrieve=extend_schema(
        summary="One share link (its token is never shown again)",
        parameters=[LINK_ID],
        responses={200: ShareLinkStateOut, **READ_ERRORS},
    ),
)
class ShareLinkViewSet(APIViewSet):
    """Share links already made: read one, revoke it."""

    model = ShareLink
    serializer_class = ShareLinkStateOut

    def scoped_queryset(self):
        return ShareLink.objects.all()

    def _link(self, pk) -> ShareLink:
        return sharing_selectors.share_link_get(link_id=parse_uuid(pk))

    def retrieve(self, request, pk=None):
        return Response(ShareLinkStateOut(_link_data(self._link(pk))).data)

    @extend_schema(
        summary="Revoke a share link: it no longer opens (every shared session's record says so)",
        parameters=[LINK_ID],
        request=None,
        responses={200: ShareLinkStateOut, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        link = self._link(pk)
        sharing.share_link_revoke(actor=request.user, link=link)
        return Response(ShareLinkStateOut(_link_data(self._link(pk))).data)
