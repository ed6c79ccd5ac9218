from django.urls import path

from . import views

app_name = "allocations"

urlpatterns = [
    path("", views.pool_list, name="pool-list"),
    path("<int:pk>/", views.pool_detail, name="pool-detail"),
    path("<int:pk>/deposit/", views.pool_deposit, name="pool-deposit"),
    path("<int:pk>/withdraw/", views.pool_withdraw, name="pool-withdraw"),
    path("<int:pk>/transfer/", views.pool_transfer, name="pool-transfer"),
]
