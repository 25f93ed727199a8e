from django.urls import path

from sessions_app.urls_incidents import urlpatterns as incident_urlpatterns
from sessions_app.views import bulk, endpoints, followups, overview, prompts, runbooks, sessions

app_name = "console"

urlpatterns = [
    path("", endpoints.endpoint_list, name="endpoint_list"),
    path("endpoints/<uuid:endpoint_id>/", endpoints.endpoint_detail, name="endpoint_detail"),
    path("endpoints/<uuid:endpoint_id>/sessions/open", sessions.session_open, name="session_open"),
    path("sessions/", sessions.session_list, name="session_list"),
    path("sessions/<uuid:session_id>/", sessions.session_detail, name="session_detail"),
    path("sessions/<uuid:session_id>/run", sessions.action_run, name="action_run"),
    path("sessions/<uuid:session_id>/batch", sessions.batch_run, name="batch_run"),
    path("sessions/<uuid:session_id>/notes", sessions.note_add, name="note_add"),
    path("sessions/<uuid:session_id>/follow-up", sessions.follow_up, name="follow_up"),
    path("sessions/<uuid:session_id>/ticket", sessions.session_ticket, name="session_ticket"),
    path("sessions/<uuid:session_id>/close", sessions.session_close, name="session_close"),
    path("sessions/<uuid:session_id>/actions/<uuid:action_id>/", sessions.action_fragment, name="action_fragment"),
    path("sessions/<uuid:session_id>/actions/<uuid:action_id>/cancel", sessions.action_cancel, name="action_cancel"),
    path("sessions/<uuid:session_id>/actions/<uuid:action_id>/resend", sessions.action_resend, name="action_resend"),
    path("sessions/<uuid:session_id>/actions/<uuid:action_id>/wake", sessions.action_wake, name="action_wake"),
    path("sessions/<uuid:session_id>/follow-up/request", prompts.follow_up_request, name="follow_up_request"),
    path("sessions/<uuid:session_id>/prompts/<uuid:prompt_id>/cancel", prompts.prompt_cancel, name="prompt_cancel"),
    path("sessions/<uuid:session_id>/prompts/<uuid:prompt_id>/reissue", prompts.prompt_reissue, name="prompt_reissue"),
    path("sessions/<uuid:session_id>/prompts/<uuid:prompt_id>/resend", prompts.prompt_resend, name="prompt_resend"),
    path(
        "sessions/<uuid:session_id>/prompts/<uuid:prompt_id>/escalate", prompts.prompt_escalate, name="prompt_escalate"
    ),
    path("follow-ups/", followups.follow_up_list, name="follow_up_list"),
    path("follow-ups/<uuid:follow_up_id>/open", followups.follow_up_open, name="follow_up_open"),
    path("sessions/<uuid:session_id>/prompts/<uuid:prompt_id>/", prompts.prompt_fragment, name="prompt_fragment"),
    path(
        "sessions/<uuid:session_id>/prompts/<uuid:prompt_id>/run-approved",
        prompts.prompt_run_approved,
        name="prompt_run_approved",
    ),
    path("bulk/", bulk.bulk_start, name="bulk_start"),
    path("bulk/<uuid:run_id>/", bulk.bulk_detail, name="bulk_detail"),
    path("bulk/<uuid:run_id>/rerun", bulk.bulk_rerun, name="bulk_rerun"),
    path("bulk/<uuid:run_id>/export.csv", bulk.bulk_export_csv, name="bulk_export_csv"),
    path("bulk/<uuid:run_id>/export.json", bulk.bulk_export_json, name="bulk_export_json"),
    path("overview/", overview.fleet_overview, name="overview"),
    path("runbooks/", runbooks.runbook_list, name="runbook_list"),
    path("runbooks/new", runbooks.runbook_create, name="runbook_create"),
    path("runbooks/<uuid:runbook_id>/", runbooks.runbook_detail, name="runbook_detail"),
    path("runbooks/<uuid:runbook_id>/edit", runbooks.runbook_edit, name="runbook_edit"),
    path("runbooks/<uuid:runbook_id>/run", runbooks.runbook_run, name="runbook_run"),
]

# Incidents, review and share links (sessions_app/urls_incidents.py).
urlpatterns += incident_urlpatterns
