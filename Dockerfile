# syntax=docker/dockerfile:1
# The dwcp-autotuner image: the operator (`dwcp-autotuner operator`, the chart's default) and the reference
# components (`dwcp-autotuner component <name>`) in one image.
#
#   docker build -t dwcp-autotuner:0.1.0 .
#
# Stage 1 builds the project's wheel; stage 2 installs it with the CPU-only build of PyTorch into a
# virtualenv; stage 3 copies that virtualenv into a slim runtime that runs as the non-root user 10001.

ARG PYTHON_VERSION=3.11

# --- 1. wheel ---------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
RUN pip wheel --no-deps --wheel-dir /dist .

# --- 2. dependencies + the wheel in a virtualenv ------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS venv
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The CPU wheel of PyTorch (a few hundred MB instead of several GB of CUDA libraries). Same pin as
# scripts/setup-dev.sh; pyproject.toml itself accepts torch>=2.2.
ARG TORCH_VERSION=2.13.*
RUN python -m venv /opt/dwcp-autotuner \
 && /opt/dwcp-autotuner/bin/pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"
COPY --from=wheel /dist/ /tmp/dist/
RUN /opt/dwcp-autotuner/bin/pip install /tmp/dist/*.whl \
 && /opt/dwcp-autotuner/bin/python -c "import dwcp_autotuner, torch; assert torch.version.cuda is None, torch.version.cuda" \
 && find /opt/dwcp-autotuner -name '__pycache__' -type d -prune -exec rm -rf {} +

# --- 3. runtime ---------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
LABEL org.opencontainers.image.title="dwcp-autotuner" \
      org.opencontainers.image.description="Kubernetes operator that tunes runtime parameters with a DQN agent and canary rollouts" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 dwcp \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/dwcp --create-home --shell /usr/sbin/nologin dwcp \
 && mkdir -p /var/cache/dwcp-autotuner \
 && chown 10001:10001 /var/cache/dwcp-autotuner
COPY --from=venv /opt/dwcp-autotuner /opt/dwcp-autotuner
# The chart mounts emptyDirs on /tmp and /var/cache/dwcp-autotuner and makes the root filesystem read-only;
# everything that wants a writable place is pointed there.
ENV PATH=/opt/dwcp-autotuner/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/dwcp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /home/dwcp
EXPOSE 9090 8080
ENTRYPOINT ["dwcp-autotuner"]
CMD ["operator"]
