"""Receivers: a verified email address picks up the director invitations waiting for it."""

from allauth.account.models import EmailAddress
from allauth.account.signals import email_confirmed, user_signed_up
from django.dispatch import receiver

from .services import accept_director_invitations


@receiver(email_confirmed)
def attach_invitations_on_email_confirmed(sender, request, email_address, **kwargs):
    accept_director_invitations(user=email_address.user, email=email_address.email)


@receiver(user_signed_up)
def attach_invitations_on_verified_signup(sender, request, user, **kwargs):
    # Institutional sign-in can arrive with an address the provider already verified: no confirmation follows.
    for address in EmailAddress.objects.filter(user=user, verified=True):
        accept_director_invitations(user=user, email=address.email)
