"""Console routes for incidents, review and share links; spliced into sessions_app.urls (namespace "console")."""

from django.urls import path

from sessions_app.views import incidents, share, tenant_settings

urlpatterns = [
    path("incidents/", incidents.incident_list, name="incident_list"),
    path("incidents/new", incidents.incident_create, name="incident_create"),
    path("incidents/<uuid:incident_id>/", incidents.incident_detail, name="incident_detail"),
    path("incidents/<uuid:incident_id>/sessions/add", incidents.incident_add_session, name="incident_add_session"),
    path(
        "incidents/<uuid:incident_id>/sessions/remove",
        incidents.incident_remove_session,
        name="incident_remove_session",
    ),
    path("incidents/<uuid:incident_id>/status", incidents.incident_status, name="incident_status"),
    path("incidents/<uuid:incident_id>/ticket", incidents.incident_ticket, name="incident_ticket"),
    path("incidents/<uuid:incident_id>/summary", incidents.incident_summary, name="incident_summary"),
    path("incidents/<uuid:incident_id>/share", incidents.incident_share, name="incident_share"),
    path("incidents/<uuid:incident_id>/preview", incidents.incident_preview, name="incident_preview"),
    path("incidents/<uuid:incident_id>/export.json", incidents.incident_export, name="incident_export"),
    path("sessions/<uuid:session_id>/review/", share.session_review, name="session_review"),
    path("sessions/<uuid:session_id>/review/redact", share.review_redact, name="review_redact"),
    path("sessions/<uuid:session_id>/review/note", share.review_note, name="review_note"),
    path("sessions/<uuid:session_id>/review/complete", share.review_complete, name="review_complete"),
    path("sessions/<uuid:session_id>/review/share", share.session_share, name="session_share"),
    path("sessions/<uuid:session_id>/review/preview", share.session_preview, name="session_preview"),
    path("sessions/<uuid:session_id>/review/export.json", share.session_export, name="session_export"),
    path("share-links/<uuid:link_id>/revoke", share.link_revoke, name="share_link_revoke"),
    path("share-links/<uuid:link_id>/export.json", share.link_export, name="share_link_export"),
    path("settings/", tenant_settings.tenant_settings, name="tenant_settings"),
]
