"""Roles come from what a user is attached to, not from flags."""

import pytest

from airr_portal import roles
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_a_new_user_is_only_an_applicant():
    user = UserFactory()
    assert roles.roles_of(user) == [roles.ROLE_APPLICANT]
    assert not roles.must_use_mfa(user)


def test_naming_a_director_makes_them_one_for_that_programme_only(programme):
    user = UserFactory()
    other = UserFactory()
    programme.directors.add(user)
    assert roles.is_programme_director(user)
    assert programme.is_directed_by(user)
    assert not programme.is_directed_by(other)
    assert roles.must_use_mfa(user)


def test_an_assessor_of_a_system_is_a_technical_assessor(system):
    user = UserFactory()
    system.assessors.add(user)
    assert roles.roles_of(user) == [roles.ROLE_ASSESSOR, roles.ROLE_APPLICANT]


def test_staff_are_admins_and_inactive_staff_are_not():
    admin = UserFactory(is_staff=True)
    assert roles.is_admin(admin)
    admin.is_active = False
    assert not roles.is_admin(admin)


def test_anonymous_visitors_hold_no_role(rf):
    from django.contrib.auth.models import AnonymousUser

    assert roles.roles_of(AnonymousUser()) == []
    assert not roles.has_mfa(AnonymousUser())
