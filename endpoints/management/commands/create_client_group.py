from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from caisey import tenancy
from caisey.actors import Party
from endpoints import services
from endpoints.models import Tenant


class Command(BaseCommand):
    help = "Create a client group (a client of the MSP) in a tenant."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--slug", default="")
        parser.add_argument("--approver-email", default="")

    def handle(self, *args, **opts):
        with tenancy.system():  # an operator names the tenant by its slug: a cross-tenant lookup
            tenant = Tenant.objects.filter(slug=opts["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {opts['tenant']!r}")
        try:
            group = services.client_group_create(
                actor=Party.OPERATOR,
                tenant=tenant,
                name=opts["name"],
                slug=opts["slug"],
                approver_email=opts["approver_email"],
            )
        except IntegrityError:
            raise CommandError(
                f"client group {opts['slug'] or opts['name']!r} already exists in {tenant.slug}"
            ) from None
        self.stdout.write(f"client group {group.slug} ({group.pk}) created in {tenant.slug}")
