from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from caisey import tenancy
from caisey.actors import Party
from caisey.errors import Rejected
from endpoints import services
from endpoints.models import ClientGroup


class Command(BaseCommand):
    help = "Issue an enrollment token for a client group. Prints the token once, alone, on stdout."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--client-group", required=True, help="client group slug")
        parser.add_argument("--expires-hours", type=float, default=168.0)
        parser.add_argument("--max-uses", type=int, default=1)
        parser.add_argument("--note", default="")

    def handle(self, *args, **opts):
        with tenancy.system():  # an operator names the tenant by its slug: a cross-tenant lookup
            group = ClientGroup.objects.filter(tenant__slug=opts["tenant"], slug=opts["client_group"]).first()
        if group is None:
            raise CommandError(f"no client group {opts['client_group']!r} in tenant {opts['tenant']!r}")
        try:
            _, secret = services.enrollment_token_issue(
                actor=Party.OPERATOR,
                client_group=group,
                expires_in=timedelta(hours=opts["expires_hours"]),
                max_uses=opts["max_uses"],
                note=opts["note"],
            )
        except Rejected as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(secret)
