# Sessions Playground as a Hugging Face Docker Space (or any container host): the Gradio app on 0.0.0.0:7860.
# Configure an Azure pool with Space secrets (see the README); without one, the app runs the embedded local
# sandbox in the strongest tier the host allows: bubblewrap where namespaces can be created (usually not inside a
# container), else Landlock + seccomp. Where neither works, the page runs no code and says why.
# Smoke test on a machine with Docker: scripts/docker-smoke.sh
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap libseccomp2 make \
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

# The same installer as the README's first command: pinned packages into ./.venv (a layer of its own).
COPY --chown=user requirements.txt requirements-dev.txt requirements-local-model.txt ./
COPY --chown=user scripts ./scripts
RUN bash scripts/setup.sh app

COPY --chown=user . .

EXPOSE 7860
CMD [".venv/bin/python", "app.py"]
