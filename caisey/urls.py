from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from bridge.prometheus import metrics_view
from caisey import health
from endpoints.agent_install import windows_msi
from endpoints.api import EnrollView
from sessions_app.views import approval, share

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="console/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/agent/v1/enroll", EnrollView.as_view(), name="agent-enroll"),
    path("downloads/caisey-agent.msi", windows_msi, name="windows-msi"),
    path("api/v1/", include("sessions_app.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("approve/<str:token>/", approval.approval_link, name="approval_link"),
    path("share/<str:token>/", share.share_view, name="share_view"),
    path("share/<str:token>/pdf", share.share_pdf, name="share_pdf"),
    path("", include("sessions_app.urls")),
]
