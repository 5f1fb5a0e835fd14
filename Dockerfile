# syntax=docker/dockerfile:1
# Relance: one image for every process (worker, scheduler, api, flower, migrate):
# the command picks the role (see docker-compose.yml and docs/ops.md).
FROM python:3.11.9-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# WeasyPrint (PDF letters) needs Pango/HarfBuzz; DejaVu is the letters' font; tzdata for TZ (logs).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libharfbuzz-subset0 fonts-dejavu-core tzdata \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 relance \
 && useradd --system --uid 10001 --gid relance --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin relance

WORKDIR /app
# constraints.txt pins every dependency to the versions CI tested (make constraints).
COPY pyproject.toml README.md constraints.txt ./
COPY worker ./worker
RUN pip install . -c constraints.txt && rm -rf build *.egg-info worker

# Policy and templates are data, read at start-up (not part of the installed package).
COPY config ./config
COPY templates ./templates

# The data volume (inbox, outbox/letters, outbox/print) is created here so that a
# fresh named volume is owned by the non-root user.
RUN mkdir -p /var/lib/relance && chown relance:relance /var/lib/relance

ENV RELANCE_CONFIG_DIR=/app/config \
    RELANCE_TEMPLATES_DIR=/app/templates \
    RELANCE_DATA_DIR=/var/lib/relance

USER relance
VOLUME ["/var/lib/relance"]
EXPOSE 8080 5555
CMD ["relance", "--help"]
