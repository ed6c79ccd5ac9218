from django.urls import path

from . import views

app_name = "programmes"

urlpatterns = [
    path("", views.programme_list, name="programme-list"),
    path("<slug:slug>/", views.programme_detail, name="programme-detail"),
    path("<slug:slug>/pools/new/", views.fund_pool_create, name="fund-pool-create"),
    path("<slug:slug>/directors/invite/", views.director_invite, name="director-invite"),
]
