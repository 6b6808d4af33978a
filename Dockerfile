# syntax=docker/dockerfile:1
#
# matrix-group-sync. The TypeScript sources run through tsx (a runtime dependency); there is
# no build step, so the image is: production node_modules + src + migrations + bin.
#
#   docker build -t matrix-group-sync .
#   docker run --rm matrix-group-sync --help
#
# docker-compose.yml runs it with PostgreSQL; docs/DEPLOY.md explains the setup.
# test/unit/deploy.test.ts checks this file (user, npm ci, vendor/, entrypoint, healthcheck).

ARG NODE_IMAGE=node:22-bookworm-slim

# ---- deps: production dependencies only ------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
# vendor/ holds the inert stand-in for the native matrix-sdk-crypto binary; package.json
# refers to it as a file: dependency, so it must be in place before npm ci.
COPY vendor/ ./vendor/
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force

# ---- runtime ----------------------------------------------------------------------------
FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    MGS_DATA_DIR=/data
WORKDIR /app
RUN groupadd --gid 10001 mgs \
 && useradd --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin mgs \
 && mkdir -p /data /config \
 && chown 10001:10001 /data
# The code stays owned by root: the service cannot change it. node_modules links the
# stand-in package to ../vendor, hence vendor/ here too.
COPY --from=deps /app/node_modules ./node_modules
COPY vendor/ ./vendor/
COPY package.json package-lock.json ./
COPY bin/ ./bin/
COPY migrations/ ./migrations/
COPY src/ ./src/
USER 10001:10001
# The embedded database (without PostgreSQL) and other local state.
VOLUME ["/data"]
# /healthz, /readyz, /metrics (serve.http; the config must listen on 0.0.0.0 to publish it).
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9090/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/matrix-group-sync.js"]
CMD ["serve", "--config", "/config/config.yaml"]
