from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from knox.models import AuthToken
from knox.settings import knox_settings

from caisey import tenancy
from caisey.actors import Party
from endpoints.access import membership_resolve
from endpoints.api_tokens import api_token_issue, api_token_revoke
from endpoints.models import ApiToken, TokenScope


class Command(BaseCommand):
    help = (
        "Issue a REST API token for a tenant member and print it, alone, on stdout. It is shown this "
        "once: only its hash is kept. --rotate first revokes every token the user has."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="username of a tenant member (technician, admin or viewer)")
        parser.add_argument(
            "--days", type=int, default=None, help="days until the token expires (default: CAISEY_API_TOKEN_DAYS, 90)"
        )
        parser.add_argument("--rotate", action="store_true", help="revoke the user's other tokens at once")
        parser.add_argument(
            "--scope",
            choices=TokenScope.values,
            default=TokenScope.OPERATOR,
            help="read: safe methods only; operator (default): may also change things, within the user's role",
        )
        parser.add_argument("--name", default="issued on the command line", help="what the token is for")

    def handle(self, *args, **opts):
        User = get_user_model()
        name = opts["user"]
        user = User._default_manager.filter(**{User.USERNAME_FIELD: name}).first()
        if user is None:
            raise CommandError(f"no user {name!r}")
        if not user.is_active:
            raise CommandError(f"user {name!r} is inactive")
        access = membership_resolve(user=user)
        if access is None or access.membership is None:
            raise CommandError(f"user {name!r} is not a member of any tenant; API tokens are for tenant members")
        if opts["days"] is not None and not 1 <= opts["days"] <= 3650:
            raise CommandError("--days must be between 1 and 3650")
        days = opts["days"] if opts["days"] is not None else knox_settings.TOKEN_TTL.days
        tenant_id = access.membership.tenant_id
        if opts["scope"] == TokenScope.OPERATOR and not access.membership.can_operate:
            opts["scope"] = TokenScope.READ  # a viewer's token only reads anyway: say so in its scope
        with transaction.atomic():
            if opts["rotate"]:
                with tenancy.bind(tenant_id):
                    ids = list(ApiToken.objects.filter(token__user=user).values_list("pk", flat=True))
                for token_id in ids:
                    api_token_revoke(actor=Party.OPERATOR, tenant_id=tenant_id, token_id=token_id, step_up=None)
                AuthToken.objects.filter(user=user).delete()  # knox tokens made without a Caisey row
            issued = api_token_issue(
                actor=Party.OPERATOR,
                tenant_id=tenant_id,
                owner=user,
                name=opts["name"],
                scope=opts["scope"],
                days=days,
                step_up=None,  # the command line: whoever runs it owns the server
            )
        self.stdout.write(issued.secret)
