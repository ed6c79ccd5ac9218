"""The programme dashboard, mounted at /programmes/<pk>/dashboard/ with no namespace (`programme-dashboard`)."""

from django.urls import path

from . import views

urlpatterns = [path("", views.programme_dashboard, name="programme-dashboard")]
