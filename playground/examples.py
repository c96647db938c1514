"""Example prompts shown in the empty chat; each attaches the bundled sample dataset and works in one click.

With a model, the example's `task` is sent; in "No model" mode, its `code` is run instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SAMPLE_CSV = ASSETS / "sales.csv"


@dataclass(frozen=True)
class Example:
    title: str
    task: str
    code: str


EXAMPLES = [
    Example(
        title="Plot monthly revenue by region",
        task="Load sales.csv, plot the monthly revenue of each region as a line chart and tell me which region grew most.",
        code=(
            "import pandas as pd\nimport matplotlib.pyplot as plt\n"
            "df = pd.read_csv('/mnt/data/sales.csv')\n"
            "monthly = df.pivot_table(index='month', columns='region', values='revenue', aggfunc='sum')\n"
            "ax = monthly.plot(figsize=(8, 4), marker='o', title='Monthly revenue by region')\n"
            "ax.set_ylabel('revenue')\nplt.tight_layout()\nplt.show()"
        ),
    ),
    Example(
        title="Summarise the sample sales data",
        task="Summarise sales.csv: total units and revenue per product, and save the summary as summary.csv.",
        code=(
            "import pandas as pd\n"
            "df = pd.read_csv('/mnt/data/sales.csv')\n"
            "summary = df.groupby('product')[['units', 'revenue']].sum().sort_values('revenue', ascending=False)\n"
            "summary.to_csv('/mnt/data/summary.csv')\n"
            "print(summary)"
        ),
    ),
]


def chatbot_examples() -> list[dict]:
    """The `examples=` of gr.Chatbot (shown while the chat is empty)."""
    return [{"text": example.task, "display_text": example.title, "files": [str(SAMPLE_CSV)]} for example in EXAMPLES]


def example_message(index: int, no_model: bool) -> dict:
    """The chat-box value an example click submits."""
    example = EXAMPLES[index]
    return {"text": example.code if no_model else example.task, "files": [str(SAMPLE_CSV)]}
