#!/bin/sh
# The image's entrypoint, the same command line as TF Serving's tf_serving_entrypoint.sh:
# serve $MODEL_BASE_PATH/$MODEL_NAME on gRPC :8500 and REST :8501, and append whatever
# arguments `docker run IMAGE ...` adds (e.g. --model_config_file=/models/models.config).
# GRPC_PORT and REST_API_PORT are servable additions (host networking, tests); by default
# they are TF Serving's ports. `exec` replaces the shell, so the server is PID 1 and gets
# the SIGTERM of `docker stop` / Kubernetes itself, and drains gracefully.
set -eu
exec python -m servable.server \
    --port="${GRPC_PORT:-8500}" \
    --rest_api_port="${REST_API_PORT:-8501}" \
    --model_name="${MODEL_NAME:-model}" \
    --model_base_path="${MODEL_BASE_PATH:-/models}/${MODEL_NAME:-model}" \
    "$@"
