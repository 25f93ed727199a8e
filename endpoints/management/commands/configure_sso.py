import json
import os

from django.core.management.base import BaseCommand, CommandError

from caisey import tenancy
from caisey.actors import Party
from caisey.errors import Rejected
from endpoints import people
from endpoints.models import Tenant


class Command(BaseCommand):
    help = (
        "Set up (or replace) a tenant's OpenID Connect sign-in. Register "
        "<public URL>/accounts/oidc/tenant-<slug>/login/callback/ as the redirect URI at the provider."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="the tenant's slug")
        parser.add_argument("--issuer", required=True, help="e.g. https://login.microsoftonline.com/<tenant id>/v2.0")
        parser.add_argument("--client-id", required=True)
        parser.add_argument(
            "--client-secret-env",
            default="CAISEY_SSO_CLIENT_SECRET",
            help="the environment variable holding the client secret (kept off the command line)",
        )
        parser.add_argument("--allowed-domains", default="", help="space-separated e-mail domains")
        parser.add_argument("--group-claim", default="groups")
        parser.add_argument("--role-mapping", default="{}", help='JSON, e.g. {"caisey-admins": "admin"}')
        parser.add_argument("--default-role", default="", help="role for an allowed domain without a mapped group")

    def handle(self, *args, **opts):
        secret = os.environ.get(opts["client_secret_env"], "")
        if not secret:
            raise CommandError(f"set the client secret in ${opts['client_secret_env']}")
        try:
            mapping = json.loads(opts["role_mapping"])
        except ValueError as exc:
            raise CommandError(f"--role-mapping is not JSON: {exc}") from None
        with tenancy.system():  # an operator's command names its tenant
            tenant = Tenant.objects.filter(slug=opts["tenant"]).first()
        if tenant is None:
            raise CommandError(f"no tenant {opts['tenant']!r}")
        try:
            sso = people.tenant_sso_configure(
                actor=Party.OPERATOR,
                tenant=tenant,
                issuer=opts["issuer"],
                client_id=opts["client_id"],
                secret=secret,
                allowed_domains=opts["allowed_domains"],
                group_claim=opts["group_claim"],
                role_mapping=mapping,
                default_role=opts["default_role"],
            )
        except Rejected as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"single sign-on for {tenant.slug} set up; redirect URI: "
            f"<public URL>/accounts/oidc/{sso.app.provider_id}/login/callback/"
        )
