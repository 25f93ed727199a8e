"""Routes of the versioned REST API, mounted at /api/v1/ by caisey.urls."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from endpoints import api_admin
from sessions_app import api, api_records, api_sharing

app_name = "api"

router = SimpleRouter(trailing_slash=True)
router.register("endpoints", api.EndpointViewSet, basename="endpoint")
router.register("sessions", api.SessionViewSet, basename="session")
router.register("sessions", api_sharing.SessionSharingViewSet, basename="session-sharing")
router.register("actions", api.ActionViewSet, basename="action")
router.register("bulk-runs", api.BulkRunViewSet, basename="bulk-run")
router.register("follow-ups", api.FollowUpViewSet, basename="follow-up")
router.register("prompts", api_records.PromptViewSet, basename="prompt")
router.register("incidents", api_records.IncidentViewSet, basename="incident")
router.register("share-links", api_sharing.ShareLinkViewSet, basename="share-link")
router.register("client-groups", api_admin.ClientGroupViewSet, basename="client-group")
router.register("enrollment-tokens", api_admin.EnrollmentTokenViewSet, basename="enrollment-token")

urlpatterns = [
    path("catalogue/", api.CatalogueView.as_view(), name="catalogue"),
    *router.urls,
]
