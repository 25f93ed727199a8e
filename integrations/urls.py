from django.urls import path

from integrations import views

app_name = "integrations"

urlpatterns = [
    path("", views.webhook_list, name="webhooks"),
    path("create", views.webhook_create, name="webhook_create"),
    path("<uuid:webhook_id>/", views.webhook_detail, name="webhook_detail"),
    path("<uuid:webhook_id>/update", views.webhook_update, name="webhook_update"),
    path("<uuid:webhook_id>/rotate", views.webhook_rotate, name="webhook_rotate"),
    path("<uuid:webhook_id>/enable", views.webhook_set_enabled, {"enabled": True}, name="webhook_enable"),
    path("<uuid:webhook_id>/disable", views.webhook_set_enabled, {"enabled": False}, name="webhook_disable"),
    path("<uuid:webhook_id>/test", views.webhook_test, name="webhook_test"),
    path(
        "<uuid:webhook_id>/deliveries/<int:delivery_id>/redeliver",
        views.delivery_redeliver,
        name="delivery_redeliver",
    ),
    # Last: the tenant-isolation walker's control request (tenant A's own destination) deletes it.
    path("<uuid:webhook_id>/delete", views.webhook_delete, name="webhook_delete"),
]
