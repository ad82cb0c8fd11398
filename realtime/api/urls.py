from django.urls import path

from realtime.api import activity, catch_up, subscriptions, tokens, views

urlpatterns = [
    # GET: catch-up (any principal); POST: publish a content event (secret key).
    path("live-updates", catch_up.LiveUpdatesApi.as_view(), name="live-updates"),
    path("changes", views.ChangePublishApi.as_view(), name="changes"),
    path("tokens", tokens.TokenMintApi.as_view(), name="tokens"),
    path("activity", activity.ActivityApi.as_view(), name="activity"),
    path(
        "realtime/subscribe",
        subscriptions.SubscribeApi.as_view(),
        name="realtime-subscribe",
    ),
    path(
        "realtime/unsubscribe",
        subscriptions.UnsubscribeApi.as_view(),
        name="realtime-unsubscribe",
    ),
    path(
        "realtime/subscriptions/<int:subscription_id>/changes",
        subscriptions.SubscriptionChangesApi.as_view(),
        name="realtime-subscription-changes",
    ),
    path("realtime/status", subscriptions.StatusApi.as_view(), name="realtime-status"),
]
