from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from realtime.api.errors import error_json
from realtime.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("api/", include("realtime.api.urls")),
]


def not_found(request: HttpRequest, exception: Exception) -> JsonResponse:
    return error_json("not_found", f"No endpoint at {request.path}", 404)


def server_error(request: HttpRequest) -> JsonResponse:
    return error_json("server_error", "Internal server error", 500)


handler404 = not_found
handler500 = server_error
