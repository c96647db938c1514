"""The Gradio playground: one smolagents CodeAgent and one sandbox session per browser tab."""

import os

# Gradio reads this when a Blocks is created; without it, start-up contacts huggingface.co and api.gradio.app.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
