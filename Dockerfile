# DIL on one workstation or as a Prefect worker image. CPU build; for a GPU worker, start from an
# nvidia/cuda runtime image and install torch's CUDA wheel instead.
FROM python:3.11-slim

ENV DO_NOT_TRACK=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/dil
COPY pyproject.toml README.md ./
COPY dil ./dil
COPY dil_core ./dil_core
COPY flows ./flows
COPY tasks ./tasks
COPY configs ./configs
COPY data ./data

# torch's CPU wheel first, so that the pinned torch==2.13.0 does not pull a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install .

# Campaign workspaces live on a volume.
VOLUME ["/workspaces"]
ENTRYPOINT ["dil"]
CMD ["--help"]
