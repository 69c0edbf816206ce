from django.contrib import admin

from .models import CartItem, FaqEntry, Order, OrderItem


class OrderItemInline(admin.TabularInline):
    model = OrderItem
    extra = 0
    autocomplete_fields = ["product"]


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["number", "status", "carrier", "placed_at", "shipped_at", "delivered_at"]
    list_filter = ["status"]
    search_fields = ["number", "tracking_number"]
    inlines = [OrderItemInline]


@admin.register(FaqEntry)
class FaqEntryAdmin(admin.ModelAdmin):
    list_display = ["question", "topic", "active"]
    list_filter = ["topic", "active"]
    search_fields = ["question", "answer", "keywords"]


@admin.register(CartItem)
class CartItemAdmin(admin.ModelAdmin):
    list_display = ["session_key", "product", "volume", "quantity", "added_at"]
    autocomplete_fields = ["product"]
