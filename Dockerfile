# The portal's production image: gunicorn serves the web app, the same image runs the Celery worker and beat.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY airr_portal ./airr_portal
COPY programmes ./programmes
COPY allocations ./allocations
RUN pip install .

COPY . .
RUN DEBUG=false SECRET_KEY=build-only ALLOWED_HOSTS=build python manage.py collectstatic --noinput \
    && useradd --system --home /app --uid 1000 airr \
    && mkdir -p /app/var/uploads && chown -R airr /app/var

USER airr
EXPOSE 8000
# The ingest API records a payload within its request (the response carries the counts): a payload at
# INGEST_MAX_UNCOMPRESSED_BYTES takes about a minute on two cores, longer than gunicorn's default 30 s.
CMD ["gunicorn", "airr_portal.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "4", "--timeout", "300", \
     "--access-logfile", "-"]
