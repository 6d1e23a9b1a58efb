"""The crawl console page: rendered empty; crawls are started over REST and followed over Socket.IO."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie


@login_required
@ensure_csrf_cookie
def console(request: HttpRequest) -> HttpResponse:
    return render(request, "crawls/console.html")
