"""Python snippets the e2e tests run inside a stack (as its technician) through `manage.py shell`."""

PRELUDE = (
    "import json; from django.contrib.auth import get_user_model; from caisey import tenancy;"
    "from endpoints.models import Endpoint; from sessions_app.services import actions as services, approvals as prompts, sessions;"
    "from sessions_app.models import Action, Prompt, SupportSession;"
    "tech = get_user_model().objects.get(username='{tech}'); "
)


def open_session(tech: str, endpoint_id: str) -> str:
    return PRELUDE.format(tech=tech) + (
        f"s = sessions.session_open(actor=tech, endpoint=Endpoint.all_tenants.get(pk='{endpoint_id}'), reason='e2e');"
        "print(json.dumps(str(s.pk)))"
    )


def run(tech: str, session_id: str, kind: str, params: dict) -> str:
    return PRELUDE.format(tech=tech) + (
        f"s = SupportSession.all_tenants.get(pk='{session_id}');"
        f"a = services.action_request(actor=tech, session=s, kind='{kind}', params={params!r});"
        "print(json.dumps(str(a.pk)))"
    )


def action_state(action_id: str) -> str:
    return (
        "import json; from sessions_app.models import Action, ActionOutput;"
        f"a = Action.all_tenants.get(pk='{action_id}');"
        "out = ''.join(ActionOutput.all_tenants.filter(action=a).order_by('seq').values_list('data', flat=True));"
        "print(json.dumps({'status': a.status, 'exit_code': a.exit_code, 'output': out, 'error': a.error,"
        " 'result': a.result}))"
    )


def prompt_state(action_id: str) -> str:
    return (
        "import json; from sessions_app.models import Prompt;"
        f"p = Prompt.all_tenants.filter(action_id='{action_id}').order_by('-created_at').first();"
        "print(json.dumps(None if p is None else {'id': str(p.pk), 'state': p.state, 'decided_by': p.decided_by}))"
    )


def set_policy(
    group_slug: str, requires: str, deadline_s: int = 300, *, allow_escalation: bool = True, without_user: bool = False
) -> str:
    """The group's approval policy (a new group has the default one: commands gated, no escalation)."""
    return (
        "from endpoints.models import ApprovalPolicy, ClientGroup;"
        f"g = ClientGroup.all_tenants.get(slug='{group_slug}');"
        f"ApprovalPolicy.all_tenants.update_or_create(client_group=g, defaults=dict(tenant_id=g.tenant_id,"
        f" requires='{requires}', response_deadline_s={deadline_s}, allow_escalation={allow_escalation},"
        f" allow_without_user={without_user}))"
    )
