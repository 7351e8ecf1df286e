# Production image: the app, its migrations, templates, static files and the npm-provided vendor assets.
FROM node:20-bookworm-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error
COPY scripts/copy-vendor-assets.sh ./scripts/
RUN sh scripts/copy-vendor-assets.sh

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 AVATAR_BFF_DATA_DIR=/data
RUN apt-get update && apt-get install -y --no-install-recommends espeak-ng && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app avatar
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server ./server
# Editable, so templates/, static/ and migrations/ beside server/ are found at run time.
RUN pip install --no-cache-dir -e .
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY --from=assets /src/static/vendor ./static/vendor
RUN mkdir -p /data && chown avatar /data
USER avatar
VOLUME /data
EXPOSE 8000
# Set AVATAR_BFF_SECRET_KEY and AVATAR_BFF_DATABASE_URL at run time; `serve` applies migrations first.
CMD ["avatar-bff", "serve", "--host", "0.0.0.0", "--port", "8000"]
