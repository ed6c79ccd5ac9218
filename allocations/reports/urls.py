from django.urls import path

from . import views

app_name = "reports"

urlpatterns = [
    path("", views.report_builder, name="builder"),
    path("exports/<int:pk>/", views.export_detail, name="export-detail"),
    path("exports/<int:pk>/download/", views.export_download, name="export-download"),
]
