# Sessions Playground as a Hugging Face Docker Space (or any container host): the Gradio app on 0.0.0.0:7860.
# Configure an Azure pool with Space secrets (see the README); without one, the app runs the embedded local
# sandbox in the strongest tier the host allows: bubblewrap where namespaces can be created (usually not inside a
# container), else Landlock + seccomp. Where neither works, the page runs no code and says why.
# The offline model (llama.cpp and the SmolLM2-135M GGUF, about 200 MB) is left out unless asked for:
#   docker build --build-arg LOCAL_MODEL=1 -t sessions-playground .
# Build and run it as a Space on this machine (Docker, or podman where there is no Docker engine):
#   sudo bash scripts/build-image.sh, sudo bash scripts/docker-smoke.sh
FROM python:3.11-slim
ARG LOCAL_MODEL=0

# bubblewrap and libseccomp for the sandbox's tiers; OpenMP for llama.cpp when the offline model is in
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap libseccomp2 make \
        $(if [ "$LOCAL_MODEL" = 1 ]; then echo libgomp1; fi) \
    && rm -rf /var/lib/apt/lists/*

# Spaces run the container as UID 1000
RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PYTHONUNBUFFERED=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
WORKDIR $HOME/app

# The same installer as the README's first command: pinned packages into ./.venv (a layer of its own, rebuilt only
# when the requirements or the installer change). Then matplotlib's font cache, built now rather than at the first
# plot of every new container: in ~/.cache/matplotlib, where the app's matplotlib looks and from where the local
# sandbox copies it into its template's HOME (azure_sessions/emulator/fontcache.py).
COPY --chown=user requirements.txt requirements-dev.txt requirements-local-model.txt ./
COPY --chown=user scripts/setup.sh ./scripts/
RUN LOCAL_MODEL=$LOCAL_MODEL bash scripts/setup.sh app --image \
    && .venv/bin/python -c "import matplotlib.font_manager"

COPY --chown=user . .

EXPOSE 7860
CMD [".venv/bin/python", "app.py"]
