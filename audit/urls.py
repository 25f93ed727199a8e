from django.urls import path

from audit import views

app_name = "audit"

urlpatterns = [
    path("", views.sink_list, name="sinks"),
    path("create", views.sink_create, name="sink_create"),
    path("<int:sink_id>/enable", views.sink_set_enabled, {"enabled": True}, name="sink_enable"),
    path("<int:sink_id>/disable", views.sink_set_enabled, {"enabled": False}, name="sink_disable"),
    path("<int:sink_id>/test", views.sink_test, name="sink_test"),
]
