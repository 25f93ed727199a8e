from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from caisey import secrets
from caisey.errors import Rejected
from endpoints import services


class Command(BaseCommand):
    help = "Create a tenant (an MSP or IT team) with its first admin user."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--slug", default="")
        parser.add_argument("--admin-username", required=True)
        parser.add_argument("--admin-email", default="")
        parser.add_argument("--admin-password", default="", help="Generated and printed when omitted.")
        parser.add_argument(
            "--mfa-optional",
            action="store_true",
            help="Do not require a second factor of the tenant's members (required by default).",
        )

    def handle(self, *args, **opts):
        password = opts["admin_password"] or secrets.new_secret()[:20]
        try:
            tenant = services.tenant_create(
                name=opts["name"],
                slug=opts["slug"],
                admin_username=opts["admin_username"],
                admin_email=opts["admin_email"],
                admin_password=password,
                mfa_required=not opts["mfa_optional"],
            )
        except IntegrityError as exc:
            raise CommandError(f"tenant or user already exists: {exc}") from None
        except Rejected as exc:
            raise CommandError(str(exc)) from None
        second_factor = "required" if tenant.mfa_required else "optional"
        self.stdout.write(
            f"tenant {tenant.slug} ({tenant.pk}) created; admin {opts['admin_username']}; second factor {second_factor}"
        )
        if not opts["admin_password"]:
            self.stdout.write(f"admin password: {password}")
