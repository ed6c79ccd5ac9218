"""The portal's URLs: pages, accounts (allauth), the admin site and the API."""

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import api_views, views

# Staff sign in through allauth too, so the admin site gets the same rate limits and MFA as every other page.
admin.site.login = secure_admin_login(admin.site.login)
admin.site.site_header = "AIRR Portal administration"
admin.site.site_title = "AIRR Portal admin"

urlpatterns = [
    path("", views.home, name="home"),
    path("accessibility/", views.accessibility, name="accessibility"),
    path("privacy/", views.privacy, name="privacy"),
    path("healthz", views.healthz, name="healthz"),
    path("account/api-token/", views.api_token, name="api-token"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    # The dashboard reads the ledger, so it lives in `allocations` (which may import `programmes`, not the reverse).
    path("programmes/<int:pk>/dashboard/", include("allocations.dashboard_urls")),
    path("programmes/", include("programmes.urls")),
    path("pools/", include("allocations.urls")),
    path("register/", include("allocations.register_urls")),
    path("usage/", include("allocations.usage.urls")),
    path("reports/", include("allocations.reports.urls")),
    path("", include("programmes.proposal_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/me/", api_views.CurrentUserView.as_view(), name="api-me"),
    path("api/", include("programmes.api_urls")),
    path("api/", include("allocations.api_urls")),
]

handler404 = "airr_portal.errors.page_not_found"
handler500 = "airr_portal.errors.server_error"
