from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from realtime.api.broadcast import BroadcastBatchApi, BroadcastSingleApi
from realtime.api.errors import error_json
from realtime.dashboard import dashboard_data, dashboard_page
from realtime.health import healthz
from realtime.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("dashboard/", dashboard_page, name="dashboard"),
    path("dashboard/data", dashboard_data, name="dashboard-data"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/", include("realtime.api.urls")),
    # Supabase's REST broadcast, where realtime-js finds it (next to the socket).
    path("realtime/v1/api/broadcast", BroadcastBatchApi.as_view(), name="broadcast"),
    re_path(
        r"^realtime/v1/api/broadcast/(?P<topic>.+)/events/(?P<event>[^/]+)$",
        BroadcastSingleApi.as_view(),
        name="broadcast-single",
    ),
]


def not_found(request: HttpRequest, exception: Exception) -> JsonResponse:
    return error_json("not_found", f"No endpoint at {request.path}", 404)


def server_error(request: HttpRequest) -> JsonResponse:
    return error_json("server_error", "Internal server error", 500)


handler404 = not_found
handler500 = server_error
