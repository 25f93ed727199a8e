from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

from endpoints.selectors import membership_for_user


class Command(BaseCommand):
    help = (
        "Print a tenant member's REST API token, alone, on stdout (created on first use). "
        "--rotate replaces it: the old token stops working at once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="username of a tenant member (technician, admin or viewer)")
        parser.add_argument("--rotate", action="store_true", help="issue a new token, revoking the current one")

    def handle(self, *args, **opts):
        User = get_user_model()
        name = opts["user"]
        user = User._default_manager.filter(**{User.USERNAME_FIELD: name}).first()
        if user is None:
            raise CommandError(f"no user {name!r}")
        if not user.is_active:
            raise CommandError(f"user {name!r} is inactive")
        if membership_for_user(user=user) is None:
            raise CommandError(f"user {name!r} is not a member of any tenant; API tokens are for tenant members")
        with transaction.atomic():
            if opts["rotate"]:
                Token.objects.filter(user=user).delete()
            token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
