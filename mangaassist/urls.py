from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("", include("catalog.urls")),
    path("chat/", include("chat.urls")),
    path("store/", include("store.urls")),
    path("healthz", views.healthz, name="healthz"),
    path("admin/dashboard/", include("chat.dashboard")),  # before admin/: the admin's catch-all would take it
    path("admin/", admin.site.urls),
    path("", include("django_prometheus.urls")),
]
