"""Herald settings: one file, driven by environment variables.

With no variables set you get the embedded default: SQLite, the in-memory channel
layer and a local-memory cache. `DATABASE_URL` switches to PostgreSQL; `REDIS_URL`
switches the channel layer, the cache and the shared counters to Redis.
"""

import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.management.utils import get_random_secret_key
from redis.maint_notifications import MaintNotificationsConfig

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {
        "1",
        "true",
        "yes",
        "on",
    }


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


# --- Core -----------------------------------------------------------------------


def secret_key() -> str:
    """HERALD_SECRET_KEY, else a random key kept in var/ (shared by local processes)."""
    if key := os.environ.get("HERALD_SECRET_KEY"):
        return key
    path = BASE_DIR / "var" / "secret_key"
    path.parent.mkdir(exist_ok=True)
    try:
        with open(path, "x") as file:
            file.write(get_random_secret_key())
        path.chmod(0o600)
    except FileExistsError:
        pass
    return path.read_text().strip()


DEBUG = env_bool("HERALD_DEBUG")
SECRET_KEY = secret_key()
ALLOWED_HOSTS = os.environ.get(
    "HERALD_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]"
).split(",")
CSRF_TRUSTED_ORIGINS = [
    o for o in os.environ.get("HERALD_CSRF_TRUSTED_ORIGINS", "").split(",") if o
]

INSTALLED_APPS = [
    "daphne",
    "realtime.apps.HeraldAdminConfig",  # django.contrib.admin, login throttled
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served locally: no CDN needed
    "realtime",
    "subscriptions",
    "audit",
    # Apps of your own whose models you track, comma-separated.
    *[app for app in os.environ.get("HERALD_EXTRA_APPS", "").split(",") if app],
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "realtime.middleware.BodySizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------

SQLITE_PATH = os.environ.get("HERALD_SQLITE_PATH", BASE_DIR / "db.sqlite3")
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{SQLITE_PATH}",
        conn_max_age=env_int("HERALD_DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the server read while a publish writes; the timeout rides out
    # short write bursts instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer, cache, shared counters ---------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
# redis-py 8 caps a pool at 100 connections by default; bursts of WebSocket
# connects then queue for a connection and surface as HTTP 500s with
# channels-redis 4.3. Size the pool explicitly.
REDIS_POOL_SIZE = env_int("HERALD_REDIS_POOL_SIZE", 1000)


# What every Redis pool of a process is made with: the channel layer's, the
# shared counters' and presence's (realtime.presence.redis_client), the cache's.
REDIS_POOL_OPTIONS: dict[str, Any] = {
    "max_connections": REDIS_POOL_SIZE,
    # redis-py 8 speaks RESP3 and turns maintenance notifications on for it
    # ("auto"); while they are on, a pool no longer checks that a connection
    # it hands out is still open (a pending notification would look like
    # unread data). After a Redis restart every idle pooled connection then
    # failed its next command with "Connection closed by server": the first
    # publish's live send, a join's group_add, the hub's restore. Those
    # notifications come only from Redis Enterprise and Redis Cloud during
    # their maintenance; without them a closed connection is replaced
    # before anything is sent on it, so nothing needs resending.
    "maint_notifications_config": MaintNotificationsConfig(enabled=False),
}


if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        **REDIS_POOL_OPTIONS,
                        # redis-py 8 times sockets out after 5 s by default, the
                        # same 5 s channels-redis blocks for in BZPOPMIN: an idle
                        # receive then fails now and then. Read longer than that.
                        "socket_timeout": 15,
                        "socket_connect_timeout": 5,
                    }
                ],
                "capacity": env_int("HERALD_LAYER_CAPACITY", 5000),
                "expiry": 60,
                "group_expiry": 86400,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "herald",
            "OPTIONS": REDIS_POOL_OPTIONS,
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": env_int("HERALD_LAYER_CAPACITY", 5000)},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth, i18n, static -----------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # `collectstatic` fills it (make run)

# --- REST -----------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "realtime.api.authentication.PrincipalAuthentication"
    ],
    "DEFAULT_PERMISSION_CLASSES": ["realtime.api.permissions.IsPrincipal"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["realtime.api.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "realtime.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": ["realtime.api.throttling.PrincipalRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "realtime.api.schema.HeraldAutoSchema",
}

# OpenAPI 3 at /api/schema/, Swagger UI at /api/docs/ (drf-spectacular).
SPECTACULAR_SETTINGS = {
    "TITLE": "Herald REST API",
    "DESCRIPTION": (
        "Publishing, catch-up, durable subscriptions, tokens and Supabase's REST "
        "broadcast. Every request carries `apikey: <key or token>` and optionally "
        '`Authorization: Bearer <token>`. Errors are `{"error", "message"}`. '
        "The operators' tenant API (`/api/tenants`) takes `Authorization: Bearer "
        "<HERALD_OPERATOR_TOKEN>` instead, and no tenant credential."
    ),
    "VERSION": "1",
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ApiKeyKindEnum": "realtime.api.tenants.KEY_KINDS",
        "CheckStateEnum": "realtime.api.tenants.CHECK_STATES",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "realtime.api.schema.add_error_responses",
    ],
}

# --- Herald -----------------------------------------------------------------------

# Largest REST request body accepted; bigger ones are refused with 413.
HERALD_MAX_BODY_BYTES = env_int("HERALD_MAX_BODY_BYTES", 1_000_000)
# A socket whose client stops reading is dropped once this much is queued for
# it (about 7,000 typical change frames); it reconnects and catches up.
HERALD_MAX_SOCKET_BUFFER = env_int("HERALD_MAX_SOCKET_BUFFER", 4 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = HERALD_MAX_BODY_BYTES
# Seconds a client has to send a whole HTTP request head (a WebSocket upgrade
# included) from the moment it connects; slower ones are disconnected
# (realtime/handshake.py, used by `manage.py serve`).
HERALD_HANDSHAKE_TIMEOUT = float(os.environ.get("HERALD_HANDSHAKE_TIMEOUT", 10))
# How many changes one POST /api/changes may carry.
HERALD_MAX_BATCH = env_int("HERALD_MAX_BATCH", 1000)
# Reverse proxies whose X-Forwarded-For names the client (comma-separated
# addresses or networks, e.g. 127.0.0.1 for a local nginx). Empty: nobody is
# trusted and the TCP peer is the client. See realtime/client_ip.py.
HERALD_TRUSTED_PROXIES = os.environ.get("HERALD_TRUSTED_PROXIES", "")
# Bearer token Prometheus sends to /metrics; without it only loopback may scrape.
HERALD_METRICS_TOKEN = os.environ.get("HERALD_METRICS_TOKEN", "")
# Lifetime of tokens minted by `mint_token` and POST /api/tokens when none is given.
HERALD_TOKEN_TTL = env_int("HERALD_TOKEN_TTL", 3600)
# Longest lifetime POST /api/tokens grants: minted tokens are short-lived.
HERALD_TOKEN_MAX_TTL = env_int("HERALD_TOKEN_MAX_TTL", 86400)

# Catch-up and polling: most changes per page, and most change-log rows read per
# request (a principal that may see few rows gets a next cursor, not a full scan).
HERALD_CATCH_UP_MAX_LIMIT = env_int("HERALD_CATCH_UP_MAX_LIMIT", 1000)
HERALD_CATCH_UP_MAX_SCAN = env_int("HERALD_CATCH_UP_MAX_SCAN", 5000)

# The relay of each server process (realtime/relay.py): seconds between reads of
# the change log and herald_messages when nothing wakes it (writes from other
# programs wait at most this long), and rows read per tenant per pass.
HERALD_RELAY_POLL_INTERVAL = float(os.environ.get("HERALD_RELAY_POLL_INTERVAL", 0.25))
HERALD_RELAY_BATCH = env_int("HERALD_RELAY_BATCH", 1000)
# PostgreSQL: wake the relays by LISTEN/NOTIFY on every commit that writes the
# change log or herald_messages (installed by `migrate`). Off: NOTIFY takes a
# database-wide lock at commit, serializing every notifying commit.
HERALD_RELAY_NOTIFY = env_bool("HERALD_RELAY_NOTIFY")
# Broadcasts in herald_messages are kept this long (they are delivered on commit).
HERALD_MESSAGES_RETENTION_HOURS = env_int("HERALD_MESSAGES_RETENTION_HOURS", 24)

# --- Rate limits (django-ratelimit, counters in the cache: Redis when set) --------


def env_rates(name: str, defaults: dict[str, str]) -> dict[str, str]:
    """`scope=rate,scope=rate` from the environment over the defaults."""
    pairs = (p.partition("=") for p in os.environ.get(name, "").split(",") if p)
    return {**defaults, **{k.strip(): v.strip() for k, _, v in pairs}}


# Per principal and scope; a tenant's `rate_limits` override these. `subscribe`
# is 10/m as on the platform Herald replaces.
HERALD_RATE_LIMITS = env_rates(
    "HERALD_RATE_LIMITS",
    {
        "default": "6000/m",
        "read": "6000/m",
        "publish": "1000/s",
        "broadcast": "1000/s",
        "subscribe": "10/m",
        "tokens": "600/m",
    },
)
# Failed authentications per client IP before every request from it gets 429.
HERALD_AUTH_FAILURE_RATE = os.environ.get("HERALD_AUTH_FAILURE_RATE", "30/m")
# The operators' tenant API (/api/tenants) answers only `Authorization: Bearer`
# with this token; unset or blank, the API is off (404), never open.
HERALD_OPERATOR_TOKEN = os.environ.get("HERALD_OPERATOR_TOKEN", "").strip()
# Admin login attempts (POSTs) per client IP and per user name; past either
# the login page answers 429 without checking the password.
HERALD_ADMIN_LOGIN_RATE_IP = os.environ.get("HERALD_ADMIN_LOGIN_RATE_IP", "10/m")
HERALD_ADMIN_LOGIN_RATE_USER = os.environ.get("HERALD_ADMIN_LOGIN_RATE_USER", "5/m")
RATELIMIT_ENABLE = env_bool("HERALD_RATELIMIT_ENABLE", True)
# A cache outage must not refuse every request; the limits lapse meanwhile.
RATELIMIT_FAIL_OPEN = True
RATELIMIT_CACHE_PREFIX = "rl:"

# --- Webhooks (delivered by `manage.py realtime_maintenance`) ---------------------

# Private, loopback and link-local targets are refused unless this is on.
HERALD_WEBHOOK_ALLOW_PRIVATE = env_bool("HERALD_WEBHOOK_ALLOW_PRIVATE")
HERALD_WEBHOOK_TIMEOUT = float(os.environ.get("HERALD_WEBHOOK_TIMEOUT", 10))
# Retry delay: base * 2**(failures-1), capped, times a random 0.5..1 (jitter).
HERALD_WEBHOOK_BACKOFF_BASE = float(os.environ.get("HERALD_WEBHOOK_BACKOFF_BASE", 2))
HERALD_WEBHOOK_BACKOFF_MAX = float(os.environ.get("HERALD_WEBHOOK_BACKOFF_MAX", 3600))
# Consecutive failures after which a subscription is paused (resume in admin).
HERALD_WEBHOOK_MAX_FAILURES = env_int("HERALD_WEBHOOK_MAX_FAILURES", 10)
# Most changes one subscription sends per turn, so one busy receiver cannot
# hold the worker.
HERALD_WEBHOOK_BATCH = env_int("HERALD_WEBHOOK_BATCH", 100)
# Seconds between passes of `realtime_maintenance --loop`.
HERALD_MAINTENANCE_INTERVAL = float(os.environ.get("HERALD_MAINTENANCE_INTERVAL", 1))
# A socket subscription not seen for this long belongs to a process that died.
HERALD_SUBSCRIPTION_STALE_AFTER = env_int("HERALD_SUBSCRIPTION_STALE_AFTER", 300)
# Rows per retention batch: each batch is one short transaction.
HERALD_RETENTION_BATCH = env_int("HERALD_RETENTION_BATCH", 5000)
HERALD_ACTIVITY_RETENTION_DAYS = env_int("HERALD_ACTIVITY_RETENTION_DAYS", 90)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": os.environ.get("HERALD_LOG_LEVEL", "INFO"),
    },
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
