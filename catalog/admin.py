from django.contrib import admin

from .models import Product, Promotion, ReviewSummary


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["sku", "title_en", "title_ja", "demographic", "volumes", "status", "price_yen", "stock", "source"]
    list_filter = ["source", "demographic", "status"]
    search_fields = ["sku", "title_en", "title_ja", "title_kana"]
    readonly_fields = ["updated_at"]
    list_per_page = 50
    show_full_result_count = False  # the MADB import makes the table large


@admin.register(ReviewSummary)
class ReviewSummaryAdmin(admin.ModelAdmin):
    list_display = ["product", "average_rating", "review_count", "updated_at"]
    autocomplete_fields = ["product"]
    search_fields = ["product__title_en", "product__title_ja"]


@admin.register(Promotion)
class PromotionAdmin(admin.ModelAdmin):
    list_display = ["code", "title", "discount_percent", "demographic", "starts_at", "ends_at", "active"]
    list_filter = ["active", "demographic"]
    autocomplete_fields = ["products"]
    search_fields = ["code", "title"]
