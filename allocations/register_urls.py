from django.urls import path

from . import register

app_name = "register"

urlpatterns = [
    path("", register.award_list, name="award-list"),
    path("awards.csv", register.awards_csv, name="awards-csv"),
    path("awards.json", register.awards_json, name="awards-json"),
]
