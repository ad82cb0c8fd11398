from django.urls import path

from realtime.api import activity, catch_up, subscriptions, tenants, tokens, views

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
    # The operators' tenant API (HERALD_OPERATOR_TOKEN; realtime/api/operator.py).
    path("tenants", tenants.TenantsApi.as_view(), name="tenants"),
    path("tenants/<slug:slug>", tenants.TenantApi.as_view(), name="tenant"),
    path(
        "tenants/<slug:slug>/suspend",
        tenants.TenantSuspendApi.as_view(),
        name="tenant-suspend",
    ),
    path(
        "tenants/<slug:slug>/resume",
        tenants.TenantResumeApi.as_view(),
        name="tenant-resume",
    ),
    path(
        "tenants/<slug:slug>/rotate-jwt-secret",
        tenants.TenantJwtSecretApi.as_view(),
        name="tenant-rotate-jwt-secret",
    ),
    path(
        "tenants/<slug:slug>/keys", tenants.TenantKeysApi.as_view(), name="tenant-keys"
    ),
    path(
        "tenants/<slug:slug>/keys/<int:key_id>",
        tenants.TenantKeyApi.as_view(),
        name="tenant-key",
    ),
    path(
        "tenants/<slug:slug>/health",
        tenants.TenantHealthApi.as_view(),
        name="tenant-health",
    ),
]
