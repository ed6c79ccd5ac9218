"""API endpoints of the project itself."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from . import roles


class CurrentUserSerializer(serializers.Serializer):
    email = serializers.EmailField()
    full_name = serializers.CharField()
    roles = serializers.ListField(child=serializers.CharField())


class CurrentUserView(APIView):
    """Who the API thinks you are: useful to check a token."""

    @extend_schema(responses=CurrentUserSerializer)
    def get(self, request):
        user = request.user
        return Response({"email": user.email, "full_name": user.full_name, "roles": roles.roles_of(user)})
