"""The audit stream's REST routes, mounted at /api/v1/ by caisey.urls (next to sessions_app.api_urls)."""

from rest_framework.routers import SimpleRouter

from audit import api

app_name = "audit-api"

router = SimpleRouter(trailing_slash=True)
router.register("audit-sinks", api.AuditSinkViewSet, basename="audit-sink")

urlpatterns = router.urls
