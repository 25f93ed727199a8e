"""The webhooks' REST routes, mounted at /api/v1/ by caisey.urls (next to sessions_app.api_urls)."""

from rest_framework.routers import SimpleRouter

from integrations import api

app_name = "integrations-api"

router = SimpleRouter(trailing_slash=True)
router.register("webhooks", api.WebhookViewSet, basename="webhook")

urlpatterns = router.urls
