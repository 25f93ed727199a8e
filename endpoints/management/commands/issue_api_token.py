from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from knox.models import AuthToken
from knox.settings import knox_settings

from endpoints.access import membership_resolve


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
        expiry = timedelta(days=opts["days"]) if opts["days"] is not None else knox_settings.TOKEN_TTL
        with transaction.atomic():
            if opts["rotate"]:
                AuthToken.objects.filter(user=user).delete()
            _, token = AuthToken.objects.create(user=user, expiry=expiry)
        self.stdout.write(token)
