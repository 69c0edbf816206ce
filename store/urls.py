from django.urls import path

from . import views

app_name = "store"
urlpatterns = [path("cart/add", views.cart_add_view, name="cart-add")]
