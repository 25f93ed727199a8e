from django.urls import path

from audit import views

app_name = "audit"

urlpatterns = [
    path("", views.sink_list, name="sinks"),
    path("create", views.sink_create, name="sink_create"),
    path("<int:sink_id>/enable", views.sink_set_enabled, {"enabled": True}, name="sink_enable"),
    path("<int:sink_id>/disable", views.sink_set_enabled, {"enabled": False}, name="sink_disable"),
    path("<int:sink_id>/test", views.sink_test, name="sink_test"),
    path("<int:sink_id>/update", views.sink_update, name="sink_update"),
    # Last: the tenant-isolation walker's control request (tenant A's own sink) deletes it.
    path("<int:sink_id>/delete", views.sink_delete, name="sink_delete"),
]
