from django.db import migrations, models


class Migration(migrations.Migration):
    """Tenants that exist already keep logging in as before (False); new tenants require a
    second factor (the field's default, True). A tenant admin turns it on in the Django admin."""

    dependencies = [
        ("endpoints", "0002_approvalpolicy"),
    ]

    operations = [
        migrations.AddField(
            model_name="tenant",
            name="mfa_required",
            field=models.BooleanField(
                default=False,
                help_text="Members must enrol a second factor (authenticator app or passkey) before reaching the console.",
            ),
        ),
        migrations.AlterField(
            model_name="tenant",
            name="mfa_required",
            field=models.BooleanField(
                default=True,
                help_text="Members must enrol a second factor (authenticator app or passkey) before reaching the console.",
            ),
        ),
    ]
