from django.urls import path

from realtime.api import views

urlpatterns = [
    path("live-updates", views.LiveUpdatePublishApi.as_view(), name="live-updates"),
    path("changes", views.ChangePublishApi.as_view(), name="changes"),
]
