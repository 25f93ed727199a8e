"""Caisey settings: everything comes from CAISEY_* environment variables.

Embedded default (nothing set): SQLite in WAL mode and the embedded Redis, both
inside CAISEY_DATA_DIR. Production: CAISEY_DATABASE_URL, CAISEY_REDIS_URL,
CAISEY_SECRET_KEY, CAISEY_ALLOWED_HOSTS and CAISEY_DEBUG=false.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from caisey import embedded_redis
from caisey.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("CAISEY_DATA_DIR", str(BASE_DIR / ".data"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

INSECURE_DEFAULT_SECRET_KEY = "caisey-insecure-development-key-do-not-use-in-production"
DEBUG = env_bool("CAISEY_DEBUG", True)
SECRET_KEY = env_str("CAISEY_SECRET_KEY", INSECURE_DEFAULT_SECRET_KEY)
ALLOWED_HOSTS = env_list("CAISEY_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CAISEY_CSRF_TRUSTED_ORIGINS", [])

if not DEBUG:
    if SECRET_KEY == INSECURE_DEFAULT_SECRET_KEY or len(SECRET_KEY) < 32:
        raise ImproperlyConfigured(
            "CAISEY_DEBUG is off but CAISEY_SECRET_KEY is unset, the default, or shorter than 32 characters"
        )
    SESSION_COOKIE_SECURE = env_bool("CAISEY_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
elif env_bool("CAISEY_PRODUCTION", False):
    raise ImproperlyConfigured("CAISEY_PRODUCTION is set: refusing to start with CAISEY_DEBUG on")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "channels",
    "endpoints",
    "bridge",
    "sessions_app",
    "caisey",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "endpoints.middleware.TenantMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "caisey.console.AppErrorMiddleware",
]

ROOT_URLCONF = "caisey.urls"
ASGI_APPLICATION = "caisey.asgi.application"

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
                "caisey.tenancy.tenant_context",
                "sessions_app.context.follow_ups_due",
            ],
        },
    },
]

# --- database -----------------------------------------------------------------

DATABASE_URL = env_str("CAISEY_DATABASE_URL", f"sqlite:///{DATA_DIR / 'caisey.sqlite3'}")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("CAISEY_DB_CONN_MAX_AGE_S", 600), conn_health_checks=True
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        # WAL lets readers proceed while one writer commits; IMMEDIATE takes the
        # write lock at BEGIN so concurrent writers queue instead of failing.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["TEST"] = {"NAME": env_str("CAISEY_TEST_SQLITE_NAME", "") or None}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- redis: channel layer, celery broker, cache --------------------------------

REDIS_URL = env_str("CAISEY_REDIS_URL", "")
EMBEDDED_REDIS = REDIS_URL == ""
if EMBEDDED_REDIS:
    REDIS_URL = embedded_redis.url_for(DATA_DIR)

# Several stacks may share one Redis (tests, staging): every key they write carries this.
REDIS_PREFIX = env_str("CAISEY_REDIS_PREFIX", "caisey")

# The channel layer is a doorbell (at-most-once): delivery never depends on it (docs/architecture.md).
# Redis pub/sub by default: a group send is one PUBLISH, where the list-based layer
# (CAISEY_CHANNEL_LAYER=core) makes several round trips and a script per send, which a
# bulk run across a thousand endpoints pays thousands of times (bench/README.md).
_REDIS_HOST = {
    "address": REDIS_URL,
    # redis-py 8's 5 s default socket timeout cuts the layer's blocking read and kills
    # consumers (channels_redis #422).
    "socket_timeout": None,
    # The default pool raises "Too many connections" past 100 during a reconnect storm
    # instead of waiting.
    "max_connections": env_int("CAISEY_REDIS_MAX_CONNECTIONS", 10000),
}
CHANNEL_LAYER_KIND = env_str("CAISEY_CHANNEL_LAYER", "pubsub")
if CHANNEL_LAYER_KIND not in ("pubsub", "core"):
    raise ImproperlyConfigured(f"CAISEY_CHANNEL_LAYER must be pubsub or core, not {CHANNEL_LAYER_KIND!r}")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "caisey.channel_layer.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [_REDIS_HOST],
            "prefix": REDIS_PREFIX,
            "max_concurrent_sends": env_int("CAISEY_CHANNEL_MAX_SENDS", 32),
        },
    }
    if CHANNEL_LAYER_KIND == "pubsub"
    else {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [_REDIS_HOST],
            "prefix": REDIS_PREFIX,
            # The default of 100 silently drops fan-out beyond it per process.
            "capacity": env_int("CAISEY_CHANNEL_CAPACITY", 10000),
            "expiry": 60,
            "group_expiry": env_int("CAISEY_GROUP_EXPIRY_S", 86400),
        },
    }
}

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_PREFIX,
    }
}


def _celery_url(url: str) -> str:
    # kombu spells a redis unix socket redis+socket:///path
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


CELERY_BROKER_URL = _celery_url(REDIS_URL)
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{REDIS_PREFIX}:celery:"}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CAISEY_CELERY_EAGER", False)
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- auth, i18n, static --------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console:endpoint_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("CAISEY_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "caisey" / "static"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "caisey.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "caisey.api.Pagination",
    "PAGE_SIZE": 50,
}
# API tokens (django-rest-knox): stored only as a hash, one per script or integration, expiring.
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=env_int("CAISEY_API_TOKEN_DAYS", 90)),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Caisey API",
    "VERSION": "1.0.0",
    "DESCRIPTION": (
        "Endpoints, sessions and actions of your tenant. Authenticate with "
        "`Authorization: Token <key>` (`manage.py issue_api_token --user NAME`)."
    ),
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["caisey.api.schema_only_v1"],
    "ENUM_NAME_OVERRIDES": {
        "ActionStatusEnum": "sessions_app.models.ActionStatus",
        "SessionStatusEnum": "sessions_app.models.SessionStatus",
        "EndpointStatusEnum": "endpoints.models.EndpointStatus",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("CAISEY_LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}, "daphne": {"level": "WARNING"}},
}

# --- Caisey behaviour -----------------------------------------------------------

CAISEY: dict[str, Any] = {
    # Heartbeat cadence the server asks of agents, per mode (seconds).
    "HEARTBEAT_ACTIVE_S": env_float("CAISEY_HEARTBEAT_ACTIVE_S", 10.0),
    "HEARTBEAT_LAZY_S": env_float("CAISEY_HEARTBEAT_LAZY_S", 60.0),
    # An endpoint is offline when no heartbeat arrived for this many intervals plus the grace.
    "PRESENCE_MISSED_BEATS": env_float("CAISEY_PRESENCE_MISSED_BEATS", 2.0),
    "PRESENCE_GRACE_S": env_float("CAISEY_PRESENCE_GRACE_S", 10.0),
    # Seconds between flushes of coalesced last-seen times to the database.
    "LAST_SEEN_FLUSH_S": env_float("CAISEY_LAST_SEEN_FLUSH_S", 1.0),
    # Generous: after a server restart thousands of hellos arrive at once and queue behind each other.
    "HELLO_TIMEOUT_S": env_float("CAISEY_HELLO_TIMEOUT_S", 30.0),
    # Seconds between gc.freeze() calls in the ASGI process (bridge/gc_pacing.py); 0 turns it off.
    "GC_FREEZE_EVERY_S": env_float("CAISEY_GC_FREEZE_EVERY_S", 300.0),
    # Heartbeats reconcile prompts when the runtime's list changed, else at most this often.
    "PROMPT_RECONCILE_EVERY_S": env_float("CAISEY_PROMPT_RECONCILE_EVERY_S", 120.0),
    "MAX_FRAME_BYTES": env_int("CAISEY_MAX_FRAME_BYTES", 256 * 1024),
    "ENROLLMENT_TOKEN_DAYS": env_int("CAISEY_ENROLLMENT_TOKEN_DAYS", 7),
    # Rate limits: (attempts, window seconds).
    "RATE_ENROLL_PER_IP": (env_int("CAISEY_RATE_ENROLL", 30), 60),
    "RATE_AUTH_FAILURES_PER_IP": (env_int("CAISEY_RATE_AUTH_FAILURES", 30), 60),
    "RATE_CONNECTS_PER_ENDPOINT": (env_int("CAISEY_RATE_CONNECTS", 30), 60),
    "RATE_LINK_PER_IP": (env_int("CAISEY_RATE_LINKS", 30), 60),
    "RATE_SHARE_PER_IP": (env_int("CAISEY_RATE_SHARE", 60), 60),
    "PRESENCE_SWEEP_S": env_float("CAISEY_PRESENCE_SWEEP_S", 5.0),
    "OUTBOX_SWEEP_S": env_float("CAISEY_OUTBOX_SWEEP_S", 2.0),
    # How long a sent message waits for its ack before a retry is due (the backoff comes on top).
    "OUTBOX_ACK_TIMEOUT_S": env_float("CAISEY_OUTBOX_ACK_TIMEOUT_S", 10.0),
    # Retry budget per message kind: attempts, then backoff base and cap (seconds, full jitter).
    "OUTBOX_RETRY": {
        "default": {
            "max_attempts": env_int("CAISEY_OUTBOX_MAX_ATTEMPTS", 8),
            "base_s": env_float("CAISEY_OUTBOX_BACKOFF_BASE_S", 2.0),
            "cap_s": env_float("CAISEY_OUTBOX_BACKOFF_CAP_S", 120.0),
        },
        "mode.set": {"max_attempts": 1000, "base_s": 5.0, "cap_s": 300.0},
    },
    # Degraded: connected, but deliveries lag or the connection keeps dropping.
    "DEGRADED_OLDEST_UNACKED_S": env_float("CAISEY_DEGRADED_OLDEST_UNACKED_S", 30.0),
    "DEGRADED_P95_LATENCY_MS": env_float("CAISEY_DEGRADED_P95_MS", 5000.0),
    "DEGRADED_RECONNECTS": env_int("CAISEY_DEGRADED_RECONNECTS", 4),
    "DEGRADED_WINDOW_S": env_float("CAISEY_DEGRADED_WINDOW_S", 600.0),
    # A session-less endpoint returns to lazy after this long without activity.
    "LAZY_AFTER_IDLE_S": env_float("CAISEY_LAZY_AFTER_IDLE_S", 300.0),
    "METRICS_TOKEN": env_str("CAISEY_METRICS_TOKEN", ""),
    # Actions: how long one waits for an away endpoint, output kept per action, and the
    # grace past its own timeout before the server calls an online endpoint's action timed out.
    "ACTION_QUEUE_EXPIRY_S": env_float("CAISEY_ACTION_QUEUE_EXPIRY_S", 24 * 3600.0),
    "ACTION_OUTPUT_LIMIT_BYTES": env_int("CAISEY_ACTION_OUTPUT_LIMIT_BYTES", 1024 * 1024),
    "ACTION_DEADLINE_GRACE_S": env_float("CAISEY_ACTION_DEADLINE_GRACE_S", 30.0),
    "SESSION_ABANDON_AFTER_S": env_float("CAISEY_SESSION_ABANDON_AFTER_S", 12 * 3600.0),
}
RATELIMIT_NAMESPACE = "rl"

CELERY_BEAT_SCHEDULE = {
    "presence-sweep": {
        "task": "bridge.tasks.presence_sweep",
        "schedule": CAISEY["PRESENCE_SWEEP_S"],
    },
    "outbox-sweep": {
        "task": "bridge.tasks.outbox_sweep",
        "schedule": CAISEY["OUTBOX_SWEEP_S"],
    },
    "action-deadlines": {"task": "sessions_app.tasks.action_deadline_sweep", "schedule": 5.0},
    "prompt-deadlines": {"task": "sessions_app.tasks.prompt_deadline_sweep", "schedule": 2.0},
    # Pending prompts of endpoints known to be away say so at once, not at their deadline.
    "prompt-reach": {"task": "sessions_app.tasks.prompt_reach_sweep", "schedule": 2.0},
    "idle-sessions": {"task": "sessions_app.tasks.idle_sessions_sweep", "schedule": 30.0},
    "abandoned-sessions": {"task": "sessions_app.tasks.abandoned_sessions_sweep", "schedule": 300.0},
    "session-connectivity": {"task": "sessions_app.tasks.session_connectivity_sweep", "schedule": 10.0},
    "follow-up-reminders": {
        "task": "sessions_app.tasks.follow_up_reminder_sweep",
        "schedule": env_float("CAISEY_FOLLOW_UP_SWEEP_S", 30.0),
    },
}

# Embedded default: approval emails land as files in the data folder (the demo prints where).
EMAIL_BACKEND = env_str("CAISEY_EMAIL_BACKEND", "django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = str(DATA_DIR / "outbox-mail")
EMAIL_HOST = env_str("CAISEY_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("CAISEY_EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("CAISEY_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = env_str("CAISEY_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = env_bool("CAISEY_EMAIL_TLS", False)
DEFAULT_FROM_EMAIL = env_str("CAISEY_EMAIL_FROM", "caisey@localhost")
CAISEY_PUBLIC_URL = env_str("CAISEY_PUBLIC_URL", "")
# The Windows agent MSI (packaging/windows/build-msi's output) offered at /downloads/caisey-agent.msi.
CAISEY_WINDOWS_MSI_PATH = env_str("CAISEY_WINDOWS_MSI_PATH", "")
