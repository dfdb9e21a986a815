# One image for every service; the command picks the role:
#   creator-activity serve | ingest | scoring | badges | migrate | api-keys create ...
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app

# The dependencies first, in their own layer: it is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY shared/ ./shared/
COPY services/ ./services/
COPY migrations/ ./migrations/
COPY alembic.ini ./

# Editable install, on purpose: shared/migrate.py finds alembic.ini (and through it migrations/)
# at Path(__file__).resolve().parent.parent. A regular install would put shared/ in
# site-packages, where neither file exists, and `creator-activity migrate` would fail. Installed
# in editable mode from /app, the code runs from /app/shared, so that root is /app, where
# alembic.ini and migrations/ were copied.
# The service runs as the unprivileged user `app`; the code stays root-owned and read-only to it.
# /app/.data (the default data_dir) is where the embedded PostgreSQL would live if
# CREATOR_ACTIVITY_DATABASE_URL were unset (a bare `docker run IMAGE`); compose always sets it.
RUN pip install --no-cache-dir --no-deps -e . \
    && useradd --system --create-home --uid 10001 --user-group app \
    && mkdir -p /app/.data \
    && chown app:app /app/.data

USER app

EXPOSE 8000

# /healthz answers as soon as the process serves HTTP (it checks neither database nor bus).
# The port is the one of the default CMD; a container started with another --port should
# override the health check too.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["creator-activity"]
# --host 0.0.0.0: the CLI listens on 127.0.0.1 by default, unreachable from outside a container.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
