"""The Supabase Realtime WebSocket endpoint (being built: refuses every socket)."""

from channels.generic.websocket import WebsocketConsumer


class RealtimeConsumer(WebsocketConsumer):
    def connect(self) -> None:
        self.close()
