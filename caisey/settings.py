"""Caisey settings: everything comes from CAISEY_* environment variables.

Embedded default (nothing set): SQLite in WAL mode and the embedded Redis, both
inside CAISEY_DATA_DIR. Production: CAISEY_DATABASE_URL, CAISEY_REDIS_URL,
CAISEY_SECRET_KEY and CAISEY_ALLOWED_HOSTS. The demo and the tests set CAISEY_DEVELOPMENT=true:
DEBUG on, a built-in secret key, plain http.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from caisey import datadir, embedded_redis
from caisey.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("CAISEY_DATA_DIR", str(BASE_DIR / ".data"))).resolve()
datadir.make_private(DATA_DIR)  # owner-only, and so is every file created in it

INSECURE_DEFAULT_SECRET_KEY = "caisey-insecure-development-key-do-not-use-in-production"
# Development mode: `manage.py demo` and the tests (pyproject's pytest env) turn it on. It is what
# allows DEBUG by default, the built-in secret key and plain http; anything else is production.
DEVELOPMENT = env_bool("CAISEY_DEVELOPMENT", False)
DEBUG = env_bool("CAISEY_DEBUG", DEVELOPMENT)
SECRET_KEY = env_str("CAISEY_SECRET_KEY", INSECURE_DEFAULT_SECRET_KEY if DEVELOPMENT else "")
# Earlier keys still accepted after a rotation (Django: signed cookies; Caisey: the transcript chain).
SECRET_KEY_FALLBACKS = env_list("CAISEY_SECRET_KEY_FALLBACKS", [])
ALLOWED_HOSTS = env_list("CAISEY_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CAISEY_CSRF_TRUSTED_ORIGINS", [])
# Addresses or networks (10.0.0.0/8) of the TLS proxies in front: only their X-Forwarded-For and
# X-Forwarded-Proto are believed (caisey/proxies.py). Empty: the peer is the client.
TRUSTED_PROXIES = env_list("CAISEY_TRUSTED_PROXIES", [])
for _proxy in TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError:
        raise ImproperlyConfigured(f"CAISEY_TRUSTED_PROXIES: {_proxy!r} is not an IP address or network") from None

if not DEVELOPMENT and (SECRET_KEY == INSECURE_DEFAULT_SECRET_KEY or len(SECRET_KEY) < 32):
    raise ImproperlyConfigured(
        "CAISEY_SECRET_KEY is unset, the default, or shorter than 32 characters: set it to a long random "
        "string (python3 -c 'import secrets; print(secrets.token_urlsafe(50))'); "
        "for a local trial, CAISEY_DEVELOPMENT=true uses a built-in key"
    )
if env_bool("CAISEY_PRODUCTION", False) and (DEBUG or DEVELOPMENT):
    raise ImproperlyConfigured("CAISEY_PRODUCTION is set: refusing to start with CAISEY_DEBUG or CAISEY_DEVELOPMENT on")

# HTTPS only (production): secure cookies, http redirected to https, HSTS. The demo and the tests
# run over plain http on localhost. Behind a TLS proxy, the scheme comes from its
# X-Forwarded-Proto, trusted from CAISEY_TRUSTED_PROXIES only (caisey/proxies.py).
HTTPS = env_bool("CAISEY_HTTPS", not DEVELOPMENT)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = HTTPS
# Health checks and scrapers talk to the server directly, over http, from inside.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("CAISEY_HSTS_S", 365 * 24 * 3600) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("CAISEY_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("CAISEY_HSTS_PRELOAD", True)
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # allauth's passkey list (accounts/2fa/webauthn/) loads {% load humanize %}; without it the page is a 500.
    "django.contrib.humanize",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "channels",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "endpoints",
    "bridge",
    "sessions_app",
    "audit",
    "integrations",
    "caisey",
    "csp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "endpoints.identity.SessionLifetimeMiddleware",
    "endpoints.middleware.TenantMiddleware",
    "endpoints.middleware.TimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "endpoints.identity.SecondFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "caisey.console.AppErrorMiddleware",
]

# Content-Security-Policy (django-csp): every script and style is a static file of this site;
# no inline script, style or event handler in the templates (tests/caisey/test_security.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        # The authenticator-app enrolment page shows its QR code as a data: image (allauth.mfa).
        "img-src": ["'self'", "data:"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        "object-src": ["'none'"],
    }
}

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
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console:endpoint_list"
LOGOUT_REDIRECT_URL = "login"

# --- identity: django-allauth (login, second factor, lockout) -----------------
# Chosen over django-otp + django-two-factor-auth: allauth.mfa does TOTP, WebAuthn passkeys and
# recovery codes in one maintained package, its account app brings login rate limits and
# lockout (per client address and per account), and its socialaccount app does OpenID Connect
# and SAML per tenant; django-two-factor-auth has WebAuthn only as a second factor (passkey login
# needs django-otp-webauthn), leaves throttling to django-axes and SSO to a third package
# (docs/identity.md).
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
ACCOUNT_ADAPTER = "endpoints.identity.AccountAdapter"
ACCOUNT_LOGIN_METHODS = {"username"}
ACCOUNT_SIGNUP_FIELDS = ["username*", "password1*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_SESSION_REMEMBER = True
ACCOUNT_LOGOUT_REDIRECT_URL = "login"
# Wrong passwords: at most CAISEY_LOGIN_FAILURES per account per CAISEY_LOGIN_LOCKOUT_S (then
# even the right password is refused until the window passes) and 10 a minute per client address.
ACCOUNT_RATE_LIMITS = {
    "login_failed": (
        f"{env_int('CAISEY_LOGIN_FAILURES_PER_IP', 10)}/m/ip,"
        f"{env_int('CAISEY_LOGIN_FAILURES', 5)}/{env_int('CAISEY_LOGIN_LOCKOUT_S', 300)}s/key"
    ),
}
# Single sign-on per tenant (endpoints.models.TenantSSO): members are created on first sign-in.
SOCIALACCOUNT_ADAPTER = "endpoints.identity.SocialAccountAdapter"
SOCIALACCOUNT_STORE_TOKENS = False
MFA_SUPPORTED_TYPES = ["totp", "webauthn", "recovery_codes"]
MFA_PASSKEY_LOGIN_ENABLED = True
MFA_TOTP_ISSUER = "Caisey"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("CAISEY_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "caisey" / "static"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "endpoints.api_tokens.ScopedTokenAuthentication",  # knox's, noting each token's last use
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
# Named so Caisey's ApiToken (scope, tenant, last use) can point at knox's token model (it is swappable).
KNOX_TOKEN_MODEL = "knox.AuthToken"
SPECTACULAR_SETTINGS = {
    "TITLE": "Caisey API",
    "VERSION": "1.0.0",
    "DESCRIPTION": (
        "Endpoints, sessions and actions of your tenant. Authenticate with "
        "`Authorization: Token <key>` (a tenant admin issues tokens on the console's API tokens page, or "
        "`manage.py issue_api_token --user NAME`). Read-only tokens get 403 for anything but GET."
    ),
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # 3.1 for its top-level `webhooks`: the events Caisey sends, one schema per type (integrations/openapi.py).
    "OAS_VERSION": "3.1.0",
    "WEBHOOKS": "integrations.openapi.WEBHOOKS",  # one import string: the whole list
    "PREPROCESSING_HOOKS": ["caisey.api.schema_only_v1"],
    "ENUM_NAME_OVERRIDES": {
        "ActionStatusEnum": "sessions_app.models.ActionStatus",
        "SessionStatusEnum": "sessions_app.models.SessionStatus",
        "EndpointStatusEnum": "endpoints.models.EndpointStatus",
        "IncidentStatusEnum": "sessions_app.models.IncidentStatus",
        "PromptStateEnum": "sessions_app.models.PromptState",
        # The action kinds kept their name when the audit sinks' kinds came (generated clients use it).
        "KindEnum": "sessions_app.api.KIND_CHOICES",
        "AuditSinkKindEnum": "audit.models.SinkKind",
        "WebhookFormatEnum": "integrations.models.WebhookFormat",
        "WebhookDeliveryStatusEnum": "integrations.models.DeliveryStatus",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # No bearer token in a log line (caisey/redact.py); Daphne's access log: caisey/daphne.py.
    "filters": {"redact_tokens": {"()": "caisey.redact.RedactTokens"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_tokens"]}},
    "root": {"handlers": ["console"], "level": env_str("CAISEY_LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's own DEBUG-only console handler would print records unfiltered: they go to ours.
        "django": {"handlers": []},
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # httpx logs every request's URL at INFO; a webhook URL can be a secret (Slack's and Teams'
        # carry their token in the path), and secrets are never logged.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
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
    # How often agents send their machine context again with a heartbeat (one write each): the
    # last known state of a machine that drops off is at most this old.
    "CONTEXT_REFRESH_S": env_float("CAISEY_CONTEXT_REFRESH_S", 300.0),
    "MAX_FRAME_BYTES": env_int("CAISEY_MAX_FRAME_BYTES", 256 * 1024),
    # Frames one agent socket may send: sustained rate and burst (bridge/framerate.py); past them
    # the socket is closed with 4429.
    "AGENT_FRAMES_PER_S": env_float("CAISEY_AGENT_FRAMES_PER_S", 50.0),
    "AGENT_FRAME_BURST": env_int("CAISEY_AGENT_FRAME_BURST", 500),
    "ENROLLMENT_TOKEN_DAYS": env_int("CAISEY_ENROLLMENT_TOKEN_DAYS", 7),
    # Security log events older than this are deleted (endpoints.tasks.security_log_prune).
    "SECURITY_LOG_DAYS": env_int("CAISEY_SECURITY_LOG_DAYS", 365),
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
    # The audit stream (audit/): seconds between sweeps, the bound on one send to a collector
    # (connect, TLS, write, its answer), records per batch, and what its syslog lines say.
    "AUDIT_SWEEP_S": env_float("CAISEY_AUDIT_SWEEP_S", 2.0),
    "AUDIT_SEND_TIMEOUT_S": env_float("CAISEY_AUDIT_SEND_TIMEOUT_S", 10.0),
    "AUDIT_BATCH": env_int("CAISEY_AUDIT_BATCH", 500),
    "AUDIT_BATCH_BYTES": env_int("CAISEY_AUDIT_BATCH_BYTES", 4 * 1024 * 1024),
    "AUDIT_HOSTNAME": env_str("CAISEY_AUDIT_HOSTNAME", ""),
    "AUDIT_SD_ID": env_str("CAISEY_AUDIT_SD_ID", ""),
    # Longest syslog message sent; a record's data past it goes as its size and SHA-256 (audit/formats.py).
    "AUDIT_SYSLOG_MAX_BYTES": env_int("CAISEY_AUDIT_SYSLOG_MAX_BYTES", 8192),
    # Journal records older than this that every sink of their tenant has sent are deleted.
    "AUDIT_JOURNAL_DAYS": env_int("CAISEY_AUDIT_JOURNAL_DAYS", 30),
    # Retry budget per message kind: attempts, then backoff base and cap (seconds, full jitter).
    # The transcript chain's HMAC keys (sessions_app/services/transcript.py), kept outside the
    # database: "id:secret" pairs, comma-separated; the first signs new entries, all of them verify.
    # Rotate by putting a new pair first and keeping the old ones while records signed with them
    # exist. Unset: one key derived from SECRET_KEY (and one from each SECRET_KEY_FALLBACKS entry).
    "TRANSCRIPT_KEYS": env_list("CAISEY_TRANSCRIPT_KEYS", []),
    # Entries hashed before the chain had keys verify only when this is on (a database from before).
    "TRANSCRIPT_ACCEPT_UNKEYED": env_bool("CAISEY_TRANSCRIPT_ACCEPT_UNKEYED", False),
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
    # The server's operator (a superuser without a tenant) must enrol a second factor too.
    "OPERATOR_MFA_REQUIRED": env_bool("CAISEY_OPERATOR_MFA_REQUIRED", True),
    # A console sign-in ends after this long without a request, and this long after the login.
    "SESSION_IDLE_S": env_float("CAISEY_SESSION_IDLE_S", 30 * 60.0),
    "SESSION_ABSOLUTE_S": env_float("CAISEY_SESSION_ABSOLUTE_S", 12 * 3600.0),
    # A console socket re-checks its session this often (and at once when its person logs out,
    # is deactivated or changes their password).
    "CONSOLE_RECHECK_S": env_float("CAISEY_CONSOLE_RECHECK_S", 60.0),
    # Webhooks (integrations/delivery.py): every send is bounded by these, whatever the destination does.
    "WEBHOOK_CONNECT_TIMEOUT_S": env_float("CAISEY_WEBHOOK_CONNECT_TIMEOUT_S", 5.0),
    "WEBHOOK_READ_TIMEOUT_S": env_float("CAISEY_WEBHOOK_READ_TIMEOUT_S", 10.0),
    # The whole exchange (connect, send, answer), however the destination drips it.
    "WEBHOOK_TOTAL_TIMEOUT_S": env_float("CAISEY_WEBHOOK_TOTAL_TIMEOUT_S", 15.0),
    "WEBHOOK_MAX_RESPONSE_BYTES": env_int("CAISEY_WEBHOOK_MAX_RESPONSE_BYTES", 64 * 1024),
    # Attempts per delivery, then given up (redeliverable from the console); backoff base and cap.
    "WEBHOOK_MAX_ATTEMPTS": env_int("CAISEY_WEBHOOK_MAX_ATTEMPTS", 12),
    "WEBHOOK_BACKOFF_BASE_S": env_float("CAISEY_WEBHOOK_BACKOFF_BASE_S", 10.0),
    "WEBHOOK_BACKOFF_CAP_S": env_float("CAISEY_WEBHOOK_BACKOFF_CAP_S", 3600.0),
    # A destination whose every delivery failed for this long is disabled (tenant admins are told).
    "WEBHOOK_DISABLE_AFTER_S": env_float("CAISEY_WEBHOOK_DISABLE_AFTER_S", 24 * 3600.0),
    "WEBHOOK_SWEEP_S": env_float("CAISEY_WEBHOOK_SWEEP_S", 5.0),
}
# The cookie lives no longer than the absolute lifetime (Django's default is 14 days).
SESSION_COOKIE_AGE = int(CAISEY["SESSION_ABSOLUTE_S"])
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
    "security-log-retention": {"task": "endpoints.tasks.security_log_prune", "schedule": 3600.0},
    # The audit stream: stamp the journal's commit order, then one delivery task per enabled sink.
    "audit-stream": {"task": "audit.tasks.audit_stream_sweep", "schedule": CAISEY["AUDIT_SWEEP_S"]},
    "audit-journal-retention": {"task": "audit.tasks.audit_journal_prune", "schedule": 3600.0},
    "webhook-deliveries": {"task": "integrations.tasks.webhook_sweep", "schedule": CAISEY["WEBHOOK_SWEEP_S"]},
}

# Production sends e-mail by SMTP (CAISEY_EMAIL_HOST and the rest); in development (the demo, the
# tests) approval e-mails land as files in the data folder (the demo prints where).
EMAIL_BACKEND = env_str(
    "CAISEY_EMAIL_BACKEND",
    "django.core.mail.backends.filebased.EmailBackend"
    if DEVELOPMENT
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_FILE_PATH = str(DATA_DIR / "outbox-mail")
EMAIL_HOST = env_str("CAISEY_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("CAISEY_EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("CAISEY_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = env_str("CAISEY_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = env_bool("CAISEY_EMAIL_TLS", False)
EMAIL_USE_SSL = env_bool("CAISEY_EMAIL_SSL", False)
# A mail server that does not answer must not hold a worker for ever (Django's default: no timeout).
EMAIL_TIMEOUT = env_int("CAISEY_EMAIL_TIMEOUT_S", 30)
DEFAULT_FROM_EMAIL = env_str("CAISEY_EMAIL_FROM", "caisey@localhost")
CAISEY_PUBLIC_URL = env_str("CAISEY_PUBLIC_URL", "")
# The Windows agent MSI (packaging/windows/build-msi's output) offered at /downloads/caisey-agent.msi.
CAISEY_WINDOWS_MSI_PATH = env_str("CAISEY_WINDOWS_MSI_PATH", "")
