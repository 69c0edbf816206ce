from django.urls import path

from . import views

app_name = "chat"
urlpatterns = [path("conversations/<uuid:conversation_id>/", views.conversation_history, name="history")]
