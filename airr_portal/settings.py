"""Settings for the AIRR Portal, read from the environment.

The defaults are safe for development and give the embedded mode (`make run`): SQLite, local files, email on the
console and Celery without Redis. Production sets DEBUG=false and the URLs of PostgreSQL, Redis and SMTP; with
DEBUG off the hardening below switches on, so `manage.py check --deploy` is clean.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("AIRR_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="development-only-secret-key-never-used-in-production-1234567890")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")
SITE_ID = 1

INSTALLED_APPS = [
    "airr_portal",
    "programmes",
    "allocations",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.forms",
    "django.contrib.sites",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "airr_portal.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "airr_portal.middleware.RequireMultiFactorMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "airr_portal.urls"
WSGI_APPLICATION = "airr_portal.wsgi.application"

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
                "airr_portal.context_processors.navigation",
            ],
        },
    },
]
FORM_RENDERER = "airr_portal.forms.GovukFormRenderer"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded worker writes while the web process reads: wait for the lock instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # Covering indexes (INCLUDE) speed up statements on PostgreSQL; SQLite ignores them, and says so at every start.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL", default="")
# The cache (and so the sign-in rate limits) should sit in its own Redis database: clearing it must not drop
# the broker's queued tasks.
REDIS_CACHE_URL = env.str("REDIS_CACHE_URL", default=REDIS_URL)
if REDIS_CACHE_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_CACHE_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_USER_MODEL = "airr_portal.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"

# Accounts: email is the login, verified before first use; failed sign-ins are rate limited per IP and per account.
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_CHANGE_EMAIL = True
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[AIRR Portal] "
ACCOUNT_LOGOUT_REDIRECT_URL = "home"
ACCOUNT_RATE_LIMITS = {
    "login_failed": env.str("LOGIN_FAILED_RATE_LIMIT", default="10/m/ip,5/5m/key"),
    "login": "30/m/ip",
    "signup": "20/m/ip",
    "confirm_email": "1/3m/key",
    "reset_password": "20/m/ip,5/m/key",
}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = "AIRR Portal"

# Institutional login (MyAccessID, a university Keycloak, ...) through OpenID Connect, configured here only.
SOCIALACCOUNT_PROVIDERS = {}
if env.str("OIDC_CLIENT_ID", default=""):
    SOCIALACCOUNT_PROVIDERS["openid_connect"] = {
        "OAUTH_PKCE_ENABLED": True,
        "APPS": [
            {
                "provider_id": env.str("OIDC_PROVIDER_ID", default="institution"),
                "name": env.str("OIDC_PROVIDER_NAME", default="Institutional login"),
                "client_id": env.str("OIDC_CLIENT_ID"),
                "secret": env.str("OIDC_CLIENT_SECRET", default=""),
                "settings": {"server_url": env.str("OIDC_SERVER_URL")},
            }
        ],
    }
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_ONLY = False

EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
# A mail server that does not answer is given up on (and retried) well within a sender's claim on an email
# (airr_portal/mail.py CLAIM, 5 minutes): smtplib would otherwise wait for ever, the claim lapse, and the beat send
# the same email again.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=60)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="AIRR Portal <noreply@airr-portal.example.org>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "Europe/London"
USE_I18N = True
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Uploads live outside static/ and are served only by views that check permission first.
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "uploads")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = DEBUG

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so a wrong token answers 401 with a WWW-Authenticate challenge rather than 403.
        "airr_portal.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "airr_portal.permissions.MultiFactorSatisfied",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "airr_portal.api_defaults.Pagination",
    "DEFAULT_PARSER_CLASSES": [
        "airr_portal.api_defaults.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "PAGE_SIZE": 100,
    "EXCEPTION_HANDLER": "airr_portal.api.error_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "AIRR Portal API",
    "DESCRIPTION": "Proposals, awards, the GPU-hour ledger and usage ingestion for the UK AI Research Resource.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models call their choices `State`: give each its own name in the schema.
    "ENUM_NAME_OVERRIDES": {
        "ProposalStateEnum": "programmes.models.Proposal.State",
        "ReviewAssignmentStateEnum": "programmes.models.ReviewAssignment.State",
        "AllocationStateEnum": "allocations.models.Allocation.State",
        "IngestBatchStatusEnum": "allocations.models.IngestBatch.Status",
    },
}

# Celery: Redis in production; without REDIS_URL a broker in local files, so `make run` needs no server.
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
CELERY_RESULT_BACKEND = REDIS_URL or f"file://{VAR_DIR / 'celery' / 'results'}"
# Tasks are acknowledged when they end (airr_portal/celery.py): Redis hands one still unacknowledged after this long
# to another worker, so it must outlast the longest a task may run (a report export's hour), or that task runs twice.
REDIS_VISIBILITY_TIMEOUT = 2 * 3600
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {"visibility_timeout": REDIS_VISIBILITY_TIMEOUT}
    if REDIS_URL
    else {
        "data_folder_in": str(VAR_DIR / "celery" / "queue"),
        "data_folder_out": str(VAR_DIR / "celery" / "queue"),
        "processed_folder": str(VAR_DIR / "celery" / "processed"),
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
    }
)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celery" / "beat-schedule")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'; object-src 'none'"
)

X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "airr_portal.logging.JsonFormatter"}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["stdout"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

HEALTH_WORKER_TIMEOUT = env.float("HEALTH_WORKER_TIMEOUT", default=5.0)

# Usage ingestion (allocations/usage): the largest payload a cluster may post, and how far a cluster's own
# view of an account's usage may differ from the ledger before it is flagged.
INGEST_MAX_BYTES = env.int("INGEST_MAX_BYTES", default=100 * 1024 * 1024)
INGEST_MAX_UNCOMPRESSED_BYTES = env.int("INGEST_MAX_UNCOMPRESSED_BYTES", default=1024 * 1024 * 1024)
# sacct --json is read whole, and held in memory at some 25 times its size: a lower limit than text's.
INGEST_MAX_JSON_BYTES = env.int("INGEST_MAX_JSON_BYTES", default=64 * 1024 * 1024)
USAGE_VARIANCE_TOLERANCE_PERCENT = env.float("USAGE_VARIANCE_TOLERANCE_PERCENT", default=2.0)
# An allocation's scheduler limit is 0 from the day after its end date; its unused hours are returned or
# forfeited this many days later, so that jobs the cluster reports late (one that ended just before midnight, a
# poll that failed) are charged against the allocation before the rest of its hours leave it.
USAGE_SETTLING_DAYS = env.int("USAGE_SETTLING_DAYS", default=2)

# Usage work on the beat schedule (allocations/tasks.py): reconciliation also runs after every ingest; the
# beat catches anything an ingest's own run missed, reads batches whose reading was lost, and settles allocations
# once a day after their end date and USAGE_SETTLING_DAYS.
CELERY_BEAT_SCHEDULE = {
    "ingest-stalled-batches": {"task": "allocations.tasks.ingest_stalled_batches_task", "schedule": 300.0},
    "reconcile-usage": {"task": "allocations.tasks.reconcile_all_systems_task", "schedule": 300.0},
    "claim-held-usage": {"task": "allocations.tasks.reconcile_claim_all_held_usage_task", "schedule": 300.0},
    "check-thresholds": {"task": "allocations.tasks.check_all_thresholds_task", "schedule": 900.0},
    # As often as reconciliation: until it has run on an allocation's first day, its thresholds and exhaustion are
    # not checked (the limits let it run from midnight, limits.py).
    "activate-allocations": {"task": "allocations.tasks.activate_allocations_task", "schedule": 300.0},
    "expire-allocations": {"task": "allocations.tasks.expire_allocations_task", "schedule": 24 * 3600.0},
    # Emails written but left unsent (airr_portal/mail.py): the broker was down, or the mail server kept failing.
    "send-unsent-emails": {"task": "airr_portal.tasks.send_unsent_emails_task", "schedule": 300.0},
    "delete-expired-report-exports": {
        "task": "allocations.tasks.report_delete_expired_exports_task",
        "schedule": 3600.0,
    },
}

# Report exports (allocations/reports): how long a built file can be downloaded before it is deleted.
REPORT_EXPORT_EXPIRY_DAYS = env.int("REPORT_EXPORT_EXPIRY_DAYS", default=7)
