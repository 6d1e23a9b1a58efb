"""No pages of its own: the signed door through which commands publish is all the note board needs."""

from django.urls import include, path

urlpatterns = [path("", include("realtime.urls"))]
