from django.contrib import admin
from django.urls import include, path

from .api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", api.urls),
    path("", include("realtime.urls")),
    path("", include("projects.urls")),
    path("crawls/", include("crawls.urls")),
    path("chat/", include("chat.urls")),
]
