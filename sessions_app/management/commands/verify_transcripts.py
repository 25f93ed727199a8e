from django.core.management.base import BaseCommand, CommandError

from caisey import tenancy
from sessions_app.models import SupportSession
from sessions_app.services.transcript import transcript_verify


class Command(BaseCommand):
    help = "Verify every session transcript's hash chain; exits non-zero naming the first bad entry."

    def add_arguments(self, parser):
        parser.add_argument("--session", help="verify only this session id")

    def handle(self, *args, **opts):
        with tenancy.system():  # the operator checks every tenant's records
            sessions = SupportSession.objects.order_by("opened_at")
            if opts["session"]:
                sessions = sessions.filter(pk=opts["session"])
            session_ids = list(sessions.values_list("pk", flat=True))
        checked = 0
        for session_id in session_ids:
            ok, entry, why = transcript_verify(session_id=session_id)
            if not ok:
                where = f"entry #{entry.index} ({entry.pk}, {entry.kind})" if entry is not None else "the record"
                raise CommandError(f"session {session_id}: {where} is bad: {why}")
            checked += 1
        self.stdout.write(f"{checked} transcript(s) verified, all intact")
