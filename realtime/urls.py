"""``path("", include("realtime.urls"))``: the signed door through which commands on this machine publish."""

from django.urls import path

from . import views

urlpatterns = [path("_realtime/publish", views.publish, name="realtime-publish")]
