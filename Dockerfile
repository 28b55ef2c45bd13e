# The Lianban project image: Airflow 3 with the hub installed as a wheel (DAGs, contracts, the GX context,
# policies and the default config ship inside it, under site-packages/lianban_files).
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-deps -w /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 50000 airflow \
 && apt-get update && apt-get install -y --no-install-recommends openssh-client curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
# The sandbox extra (the police simulator's server, the benchmarks' tools) for docker-compose.yml's
# simulator service, and the celery extra for its celery profile; a production image without the
# sandbox builds with --build-arg EXTRAS=celery.
ARG EXTRAS=sandbox,celery
RUN wheel="$(ls /wheels/lianban-*.whl)" \
 && pip install --no-cache-dir "${wheel}${EXTRAS:+[$EXTRAS]}" && rm -rf /wheels
USER airflow
ENV AIRFLOW_HOME=/opt/airflow \
    LIANBAN_VAR=/var/lianban \
    GX_ANALYTICS_ENABLED=False
WORKDIR /opt/airflow
# DAGS_FOLDER is set in docker-compose.yml from the installed package; see docs/operations.md.
ENTRYPOINT ["airflow"]
