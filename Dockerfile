# One image for both roles: `envlink api` and `envlink worker` (see docker-compose.yml).
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core core
COPY schemas schemas
COPY store store
COPY ingest ingest
COPY alerts alerts
COPY api api
COPY envlink envlink
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
RUN useradd --system --uid 10001 --home-dir /srv/envlink envlink \
    && mkdir -p /srv/envlink && chown envlink /srv/envlink
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /srv/envlink
COPY config config
USER envlink
ENV ENVLINK_CONFIG_DIR=/srv/envlink/config \
    ENVLINK_API_HOST=0.0.0.0 \
    ENVLINK_HJ212_HOST=0.0.0.0
EXPOSE 8000 9212
ENTRYPOINT ["envlink"]
CMD ["api"]
