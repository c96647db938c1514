"""The scripted model's behaviour in the browser tests: the task text picks a script; each reply is its next step."""

from __future__ import annotations

import re
from typing import Any

from tests.support.scripted_model import code_reply, last_user_text

# ---------------------------------------------------------------------------------------------------------------
SALES_PLOT = """\
import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv('/mnt/data/sales.csv')
monthly = df.pivot_table(index='month', columns='region', values='revenue', aggfunc='sum')
growth = (monthly.iloc[-1] / monthly.iloc[0] - 1).sort_values(ascending=False)
print(monthly.round(0).tail(3))
ax = monthly.plot(figsize=(8, 4), marker='o', title='Monthly revenue by region')
ax.set_ylabel('revenue')
plt.tight_layout()
plt.show()"""


def script_for(task: str) -> list[str]:
    """The replies for one task, step by step."""
    if "sales.csv" in task and "plot" in task.lower():
        return [
            code_reply(SALES_PLOT, "I will load the sales data and plot monthly revenue per region."),
            code_reply(
                "final_answer(f'{growth.index[0]} grew most: {growth.iloc[0]:+.0%} from January to December.')",
                "The chart is shown; now I report the region that grew most.",
            ),
        ]
    if match := re.search(r"\bplot (\w+)", task):
        label = match.group(1)
        return [
            code_reply(
                "import time\nimport matplotlib.pyplot as plt\ntime.sleep(0.8)\n"
                f"print('plotting {label}')\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.title('{label}')\nplt.show()",
                f"I will draw the {label} plot.",
            ),
            code_reply(f"final_answer('Plotted {label}.')", "The plot is shown."),
        ]
    if match := re.search(r"\bread ([\w.\-]+)", task):
        name = match.group(1)
        return [
            code_reply(f"content = open('/mnt/data/{name}').read()\nprint(content)", f"I will read {name}."),
            code_reply("final_answer('File says: ' + ' | '.join(content.split()))", "I read it."),
        ]
    if match := re.search(r"\bwrite ([\w.\-]+)", task):
        name = match.group(1)
        return [
            code_reply(
                f"with open('/mnt/data/{name}', 'w') as f:\n    f.write('written by the agent\\n')\nprint('saved')",
                f"I will save {name}.",
            ),
            code_reply(f"final_answer('Saved {name}.')", "Saved."),
        ]
    if "divide by zero" in task:
        return [
            code_reply("print('about to fail')\nx = 1 / 0", "Let me divide."),
            code_reply("final_answer('recovered after the error')", "That failed; I recover."),
        ]
    if "slow loop" in task:
        loop = "import time\nfor i in range(20):\n    print('tick', i)\n    time.sleep(0.1)"
        return [code_reply(loop, "A slow step.")] * 6 + [code_reply("final_answer('slow done')")]
    if "count slowly" in task:
        loop = "import time\nfor i in range(60):\n    print('count', i)\n    time.sleep(1)"
        return [
            code_reply("survivor = 'still here'\n" + loop, "I count to 60, one number a second."),
            code_reply("final_answer('counted to 60')"),
        ]
    if "recall the survivor" in task:
        return [code_reply("final_answer('survivor is ' + survivor)", "I read the variable.")]
    if match := re.search(r"\bremember (\w+)", task):
        return [
            code_reply(f"marker = '{match.group(1)}'\nprint('remembered', marker)", "I store the marker."),
            code_reply("final_answer('stored ' + marker)"),
        ]
    if "recall" in task:
        return [
            code_reply("final_answer('marker is ' + marker)", "I recall the marker."),
            code_reply("final_answer('no marker here')", "There is no marker in this session."),
        ]
    return [code_reply(f"final_answer({('ECHO: ' + task.splitlines()[0])!r})", "I echo.")]


def responder(messages: list) -> str:
    task = last_user_text(messages)
    last_user = max(i for i, m in enumerate(messages) if str(_role(m)).lower().endswith("user"))
    done = sum(1 for m in messages[last_user:] if str(_role(m)).lower().endswith("assistant"))
    task = task.removeprefix("New task:\n")
    script = script_for(task)
    return script[min(done, len(script) - 1)]


def _role(message: Any) -> Any:
    return message.get("role") if isinstance(message, dict) else getattr(message, "role", "")
