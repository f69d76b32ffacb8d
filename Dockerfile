# servable: a CPU image that runs like tensorflow/serving's.
#
#   docker build -t servable .
#   docker run -p 8500:8500 -p 8501:8501 -v "$PWD/models/mnist:/models/mnist" -e MODEL_NAME=mnist servable
#
# The model is served from $MODEL_BASE_PATH/$MODEL_NAME (default /models/model); extra
# arguments are appended to the server's flags, e.g. `docker run ... servable
# --model_config_file=/models/models.config`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MODEL_NAME=model \
    MODEL_BASE_PATH=/models

WORKDIR /opt/servable

# Dependencies first, pinned, in their own layer: source edits do not reinstall TensorFlow.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock

COPY pyproject.toml README.md ./
COPY servable ./servable
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf /opt/servable/build /opt/servable/*.egg-info \
    && groupadd --gid 10001 servable \
    && useradd --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin servable \
    && mkdir -p /models \
    && chown servable:servable /models

COPY deploy/docker/entrypoint.sh /usr/bin/tf_serving_entrypoint.sh

USER 10001:10001
WORKDIR /models
EXPOSE 8500 8501

# Liveness of the process (not of any model: see /v1/readyz for that), on the port and
# scheme the server's own flags give (a `docker run IMAGE --rest_api_port=...` included).
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-m", "servable.healthcheck"]

ENTRYPOINT ["/usr/bin/tf_serving_entrypoint.sh"]
