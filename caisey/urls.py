from allauth.account import views as account_views
from allauth.account.decorators import secure_admin_login
from csp.decorators import csp_replace
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAuthenticated

from bridge.prometheus import metrics_view
from caisey import health
from endpoints import members_views
from endpoints.agent_install import windows_msi
from endpoints.api import EnrollView
from sessions_app.views import approval, share

# The Django admin has no login form of its own: it sends people to the one login above.
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]

urlpatterns = [
    # allauth's login and logout (rate limits, lockout, second factor); its other pages under accounts/.
    # The login page's "sign in with your organisation" form ends at the tenant's identity provider
    # (a POST to login/sso/, redirected to its issuer), and Chromium applies form-action to every
    # redirect of a submission; which issuer is not known when the page is drawn, so this one page
    # goes without form-action (it keeps default-src 'self' and no inline script).
    path("login/", csp_replace({"form-action": None})(account_views.login), name="login"),
    path("logout/", account_views.logout, name="logout"),
    path("login/sso/", members_views.sso_start, name="sso_start"),
    path("accounts/", include("allauth.urls")),
    path("members/", include("endpoints.urls")),
    path("audit/", include("audit.urls")),
    path("members/webhooks/", include("integrations.urls")),
    path("admin/", admin.site.urls),
    path("api/agent/v1/enroll", EnrollView.as_view(), name="agent-enroll"),
    path("downloads/caisey-agent.msi", windows_msi, name="windows-msi"),
    path("api/v1/", include("sessions_app.api_urls")),
    # Apps above sessions_app bring their own routers (sessions_app may not import them).
    path("api/v1/", include("integrations.api_urls")),
    path("api/v1/", include("audit.api_urls")),
    # The schema maps the API: for signed-in people and token holders only (issue 11 item 13).
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="api-schema"),
    path("healthz", health.healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("approve/<str:token>/", approval.approval_link, name="approval_link"),
    path("share/<str:token>/", share.share_view, name="share_view"),
    path("share/<str:token>/pdf", share.share_pdf, name="share_pdf"),
    path("", include("sessions_app.urls")),
]
