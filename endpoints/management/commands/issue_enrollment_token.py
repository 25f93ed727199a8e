from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

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
        group = ClientGroup.all_tenants.filter(tenant__slug=opts["tenant"], slug=opts["client_group"]).first()
        if group is None:
            raise CommandError(f"no client group {opts['client_group']!r} in tenant {opts['tenant']!r}")
        try:
            _, secret = services.enrollment_token_issue(
                actor="cli",
                client_group=group,
                expires_in=timedelta(hours=opts["expires_hours"]),
                max_uses=opts["max_uses"],
                note=opts["note"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(secret)
