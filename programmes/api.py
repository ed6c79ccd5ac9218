"""Read-only API for systems and programmes."""

from rest_framework import permissions, serializers, viewsets

from .models import Programme, System


class SystemSerializer(serializers.ModelSerializer):
    class Meta:
        model = System
        fields = ["slug", "name", "cluster_name", "gpu_model", "gpus_per_node", "charge_factor", "time_zone"]


class SystemViewSet(viewsets.ReadOnlyModelViewSet):
    """Systems are public: applicants need to know what they can ask for."""

    serializer_class = SystemSerializer
    lookup_field = "slug"
    permission_classes = [permissions.AllowAny]

    def get_queryset(self):
        return System.objects.visible_to(self.request.user)


class ProgrammeSerializer(serializers.ModelSerializer):
    directors = serializers.SlugRelatedField(many=True, read_only=True, slug_field="email")

    class Meta:
        model = Programme
        fields = ["slug", "name", "description", "directors"]


class ProgrammeViewSet(viewsets.ReadOnlyModelViewSet):
    """The programmes a user manages: all for admins, their own for directors, none for anyone else."""

    serializer_class = ProgrammeSerializer
    lookup_field = "slug"

    def get_queryset(self):
        return Programme.objects.visible_to(self.request.user).prefetch_related("directors")
