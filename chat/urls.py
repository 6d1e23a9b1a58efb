from django.urls import path

from . import views

app_name = "chat"

urlpatterns = [
    path("", views.session_list, name="list"),
    path("<uuid:session_id>/", views.room, name="room"),
]
