from django.urls import path

from . import views

app_name = "catalog"
urlpatterns = [
    path("", views.store, name="store"),
    path("products/<str:sku>/", views.product, name="product"),
]
