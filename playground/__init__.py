"""The Gradio playground: one smolagents CodeAgent and one sandbox session per browser tab."""

import os

# The one place analytics are turned off (unless the environment asks for them): Gradio reads this variable when a
# Blocks is created and before each report; without it, start-up contacts huggingface.co and api.gradio.app.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
