from django.urls import path

from endpoints import members_views, security_views

app_name = "members"

urlpatterns = [
    path("", members_views.member_list, name="list"),
    path("invite", members_views.member_invite, name="invite"),
    path("security", members_views.security_update, name="security"),
    path("tokens/", security_views.token_list, name="tokens"),
    path("tokens/issue", security_views.token_issue, name="token_issue"),
    path("tokens/<int:api_token_id>/revoke", security_views.token_revoke, name="token_revoke"),
    path("tokens/<int:api_token_id>/rotate", security_views.token_rotate, name="token_rotate"),
    path("sso/", members_views.sso_settings, name="sso"),
    path("security-log/", security_views.security_log, name="security_log"),
    path("security-log.csv", security_views.security_log_csv, name="security_log_csv"),
    path("<int:membership_id>/deactivate", members_views.member_set_active, {"active": False}, name="deactivate"),
    path("<int:membership_id>/reactivate", members_views.member_set_active, {"active": True}, name="reactivate"),
]
