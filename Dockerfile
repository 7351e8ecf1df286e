# Production image: the avatar-bff wheel (app, templates, static files with the npm-built vendor assets,
# migrations) on the hash-checked runtime lock. No simulator extra and no espeak-ng: flows talk to Kaltura.

# The front-end libraries from the npm registry (static/vendor, git-ignored).
FROM node:20-bookworm-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error
COPY scripts/copy-vendor-assets.sh ./scripts/
RUN sh scripts/copy-vendor-assets.sh

# The wheel, static/vendor inside it, built by the backend `make setup` installs (pinned in requirements/dev.lock).
FROM python:3.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/dev.lock ./requirements/
COPY scripts/build-requirements.py ./scripts/
RUN python scripts/build-requirements.py requirements/dev.lock > /tmp/build.txt \
    && pip install --no-cache-dir --require-hashes -r /tmp/build.txt
COPY server ./server
COPY templates ./templates
COPY static ./static
COPY migrations ./migrations
COPY --from=assets /src/static/vendor ./static/vendor
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 AVATAR_BFF_DATA_DIR=/data
COPY requirements/main.lock /tmp/main.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/main.lock && rm /tmp/main.lock
COPY --from=wheel /dist/ /tmp/dist/
# --no-deps: the lock above already holds every dependency; `pip check` fails the build if it does not.
RUN pip install --no-cache-dir --no-deps /tmp/dist/*.whl && rm -r /tmp/dist && pip check
RUN groupadd --system --gid 10001 avatar \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /data avatar \
    && mkdir /data && chown avatar:avatar /data
# Numeric, so a runtime that checks "not root" (Kubernetes runAsNonRoot) can tell without reading /etc/passwd.
USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 8000
# Slim images have no curl: the probe is Python's standard library (any error or non-2xx status fails it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Set AVATAR_BFF_SECRET_KEY, AVATAR_BFF_DATABASE_URL and AVATAR_BFF_PUBLIC_URL at run time. `serve` applies
# migrations first unless AVATAR_BFF_MIGRATE_ON_START=false (several instances: `avatar-bff migrate` once, as
# compose.yaml does). On SIGTERM it drains within AVATAR_BFF_SHUTDOWN_GRACE_SECONDS (10): give the container
# longer than that to stop (compose.yaml: stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["avatar-bff", "serve", "--host", "0.0.0.0", "--port", "8000"]
