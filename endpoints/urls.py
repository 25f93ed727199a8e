from django.urls import path

from endpoints import views

app_name = "console"

urlpatterns = [
    path("", views.endpoint_list, name="endpoint_list"),
    path("endpoints/<uuid:endpoint_id>/", views.endpoint_detail, name="endpoint_detail"),
]
