"""Users of the portal. Email is the login; roles come from what a user is attached to (see roles.py)."""

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.utils import timezone


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, **extra_fields):
        if not email:
            raise ValueError("A user needs an email address.")
        user = self.model(email=self.normalize_email(email).lower(), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email, password=None, **extra_fields):
        extra_fields["is_staff"] = True
        extra_fields["is_superuser"] = True
        return self._create_user(email, password, **extra_fields)

    def get_by_natural_key(self, email):
        return self.get(email__iexact=email)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField("email address", unique=True)
    full_name = models.CharField(max_length=200, blank=True)
    organisation = models.CharField(max_length=200, blank=True)
    is_staff = models.BooleanField(
        "admin", default=False, help_text="Service staff: manages systems and programmes, sees everything."
    )
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = []

    class Meta:
        ordering = ["email"]

    def __str__(self):
        return self.full_name or self.email

    def save(self, *args, **kwargs):
        self.email = self.email.lower()
        super().save(*args, **kwargs)


class ApiToken(models.Model):
    """A person's API token. Only its SHA-256 is stored: a copy of the database gives no usable key."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="api_token")
    prefix = models.CharField(max_length=16, help_text="The key's first characters, to recognise it by.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"API token {self.prefix}… of {self.user}"


class OutgoingEmail(models.Model):
    """An email the portal owes someone: written in the transaction that calls for it, sent by a task after it.

    One row per address, so a mail server refusing one address is retried for that address alone, and nobody
    else is told twice. The beat sends what is left unsent (the broker was down, or every retry failed), so an
    email called for by something committed is not lost. Sent rows are the record of who was told what, when.
    """

    to = models.EmailField(max_length=254)
    subject = models.CharField(max_length=300)
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    # A sender claims the email until this time, so the beat and its own task do not send it together; a sender
    # that died lets its claim lapse.
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            # The beat looks only for what is unsent: sent rows, the history, cost it nothing.
            models.Index(fields=["created_at"], name="outgoing_email_unsent", condition=models.Q(sent_at__isnull=True))
        ]

    def __str__(self):
        return f"{self.subject} to {self.to}"
