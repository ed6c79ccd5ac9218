"""Background work for programmes: the emails that tell people they direct a programme."""

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.urls import reverse

from .models import DirectorInvitation


@shared_task
def send_director_invitation_task(invitation_id: int) -> None:
    """Email the invited address; safe to run twice (at worst the person gets the same email again)."""
    invitation = DirectorInvitation.objects.select_related("programme").filter(pk=invitation_id).first()
    if invitation is None:
        return
    programme = invitation.programme.name
    if invitation.is_pending:
        subject = f"You are invited to direct {programme}"
        body = (
            f"You have been named a programme director of {programme} on the AIRR Portal.\n\n"
            f"Create an account with this email address ({invitation.email}) and confirm it, and you will be "
            f"the programme's director straight away:\n{settings.SITE_URL}{reverse('account_signup')}\n"
        )
    else:
        subject = f"You now direct {programme}"
        body = (
            f"You have been named a programme director of {programme} on the AIRR Portal.\n\n"
            f"Sign in to see its fund pools:\n{settings.SITE_URL}{reverse('programmes:programme-list')}\n"
        )
    send_mail(settings.ACCOUNT_EMAIL_SUBJECT_PREFIX + subject, body, None, [invitation.email])
