# One image for every Python service (api, worker, beat, flower, migrate); the command picks the role.
# Pinned by exact tag (a digest could not be resolved offline; pin `python:3.11.11-slim-bookworm@sha256:…`
# once a registry is reachable: `docker buildx imagetools inspect python:3.11.11-slim-bookworm`).
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY shared ./shared
COPY services ./services
# The versions the suite ran with: constraints.txt pins every package (make lock regenerates it).
RUN pip install -c constraints.txt . \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin jeffrey

USER jeffrey
EXPOSE 8000 5555
# The API, one worker process per CPU (API_WORKERS overrides); compose adds PROMETHEUS_MULTIPROC_DIR.
CMD ["python", "-m", "jeffrey_api.serve", "--host", "0.0.0.0", "--port", "8000", "--no-access-log"]
