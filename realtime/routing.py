from django.urls import path

from realtime.consumers import RealtimeConsumer

websocket_urlpatterns = [
    path("realtime/v1/websocket", RealtimeConsumer.as_asgi()),
    path("socket/websocket", RealtimeConsumer.as_asgi()),
]
