from django.contrib import admin
from django.urls import include, path

from chat.api import router as chat_router
from crawls.api import router as crawls_router
from projects.api import api
from realtime import views as realtime_views

api.add_router("/crawls/", crawls_router)
api.add_router("/chat/", chat_router)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", api.urls),
    path("_realtime/publish", realtime_views.publish),
    path("", include("projects.web_urls")),
    path("crawls/", include("crawls.web_urls")),
    path("chat/", include("chat.web_urls")),
]
