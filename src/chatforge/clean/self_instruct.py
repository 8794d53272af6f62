"""Self-instruct (Wang et al. 2022; Alpaca; BELLE; the seed's STEP 2 §2): the prompt that shows a
generator a few tasks as a numbered list, the parser of its continuation, and the filters that
clean what it writes.

The list format is the seed's: tasks separated by `###`, each as three numbered lines
`N. 指令: ...`, `N. 输入: ...`, `N. 输出: ...` (the English template uses Instruction/Input/Output);
an input of `<无输入>` / `<noinput>` means none. The prompt ends with `###\\nK. 指令:` so the
generator continues the list at task K.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ZH_TEMPLATE = """你被要求提供{count}个多样化的任务指令。这些任务指令将被提供给GPT模型，我们将评估GPT模型完成指令的能力。
以下是你提供指令需要满足的要求：

	1.尽量不要在每个指令中重复动词，要最大化指令的多样性。
	2.使用指令的语气也应该多样化。例如，将问题与祈使句结合起来。
	3.指令类型应该是多样化的，包括各种类型的任务，类别种类例如：brainstorming，open QA，closed QA，rewrite，extract，generation，classification，chat，summarization。
	4.GPT语言模型应该能够完成这些指令。例如，不要要求助手创建任何视觉或音频输出。例如，不要要求助手在下午5点叫醒你或设置提醒，因为它无法执行任何操作。例如，指令不应该和音频、视频、图片、链接相关，因为GPT模型无法执行这个操作。
	5.指令用中文书写，指令应该是1到2个句子，允许使用祈使句或问句。
	6.你应该给指令生成适当的输入，输入字段应包含为指令提供的具体示例，它应该涉及现实数据，不应包含简单的占位符。输入应提供充实的内容，使指令具有挑战性。
	7.并非所有指令都需要输入。例如，当指令询问一些常识信息，比如“世界上最高的山峰是什么”，不需要提供具体的上下文。在这种情况下，我们只需在输入字段中放置“<无输入>”。当输入需要提供一些文本素材（例如文章，文章链接）时，就在输入部分直接提供一些样例。当输入需要提供音频、图片、视频或者链接时，则不是满足要求的指令。
	8.输出应该是针对指令和输入的恰当回答。

下面是{count}个任务指令的列表：
"""

EN_TEMPLATE = """You are asked to come up with a set of {count} diverse task instructions. These task instructions will be given to a GPT model and we will evaluate the GPT model for completing the instructions.
Here are the requirements:

	1. Try not to repeat the verb for each instruction to maximize diversity.
	2. The language used for the instruction also should be diverse. For example, you should combine questions with imperative instructions.
	3. The type of instructions should be diverse: brainstorming, open QA, closed QA, rewrite, extract, generation, classification, chat, summarization.
	4. A GPT language model should be able to complete the instruction. Do not ask the assistant to create any visual or audio output, to wake you up or set a reminder; instructions should not be about audio, video, images or links.
	5. The instructions should be in English, 1 to 2 sentences long; imperative sentences and questions are both allowed.
	6. Generate an appropriate input for the instruction: a realistic, specific example, not a placeholder.
	7. Not all instructions need an input; then put "<noinput>" in the input field.
	8. The output should be an appropriate response to the instruction and the input.

List of {count} tasks:
"""

FIELDS = {"zh": ("指令", "输入", "输出"), "en": ("Instruction", "Input", "Output")}
NO_INPUT = ("<无输入>", "<noinput>", "<no input>", "无输入", "")
BLOCKED_WORDS = ("image", "images", "picture", "pictures", "photo", "graph", "graphs", "file", "files", "map", "maps",
                 "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram", "link", "url",
                 "图片", "图像", "照片", "视频", "音频", "音乐", "链接", "网址", "绘制", "画一", "流程图")


@dataclass(frozen=True)
class Task:
    instruction: str
    input: str
    output: str

    def alpaca(self) -> dict[str, str]:
        return {"instruction": self.instruction, "input": self.input, "output": self.output}

    def messages(self) -> dict[str, list[dict[str, str]]]:
        user = f"{self.instruction}\n\n{self.input}" if self.input else self.instruction
        return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": self.output}]}


def render_prompt(examples: list[Task], language: str, count: int) -> str:
    """The template, the examples as tasks 1..k, and the opening of task k+1 for the generator to continue."""
    instruction, input_, output = FIELDS[language]
    none = "<无输入>" if language == "zh" else "<noinput>"
    text = (ZH_TEMPLATE if language == "zh" else EN_TEMPLATE).format(count=count)
    for i, task in enumerate(examples, 1):
        text += (f"###\n{i}. {instruction}: {task.instruction}\n{i}. {input_}: {task.input or none}\n"
                 f"{i}. {output}: {task.output}\n")
    return text + f"###\n{len(examples) + 1}. {instruction}:"


def parse_tasks(continuation: str, first_number: int, language: str) -> tuple[list[Task], int]:
    """Tasks in the generator's continuation of `render_prompt` (which ended at task `first_number`'s
    instruction label). Returns (tasks, number of blocks that did not parse)."""
    instruction, input_, output = (re.escape(f) for f in FIELDS[language])
    text = f"{first_number}. {FIELDS[language][0]}:" + continuation
    pattern = re.compile(
        rf"^\s*(\d+)\s*\.\s*{instruction}\s*[:：](?P<instruction>.*?)\n\s*\1\s*\.\s*{input_}\s*[:：](?P<input>.*?)"
        rf"\n\s*\1\s*\.\s*{output}\s*[:：](?P<output>.*)$",
        re.S,
    )
    tasks, broken = [], 0
    for block in text.split("###"):
        if not block.strip():
            continue
        match = pattern.match(block.strip("\n"))
        if match is None:
            broken += 1
            continue
        task_input = match["input"].strip()
        tasks.append(Task(match["instruction"].strip(), "" if task_input in NO_INPUT else task_input, match["output"].strip()))
    return tasks, broken


class CjkWordTokenizer:
    """For rouge_score: CJK characters one token each, other text as lower-cased words (its default
    tokenizer drops every non-ASCII character, so Chinese instructions would all look empty)."""

    _TOKEN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)

    def tokenize(self, text: str) -> list[str]:
        return self._TOKEN.findall(text.lower())


def length_in_units(text: str) -> int:
    """Words, with each CJK character counting as one."""
    return len(CjkWordTokenizer().tokenize(text))


class InstructionFilter:
    """Drops a task by the first failing rule: length, blocked words, not starting with a letter,
    an empty output, an exact duplicate, or ROUGE-L F1 above `max_rouge` with any instruction
    already in the pool (seeds included)."""

    def __init__(self, pool: list[str], min_units: int, max_units: int, max_rouge: float,
                 blocked: tuple[str, ...] = BLOCKED_WORDS):
        from rouge_score import rouge_scorer

        self.scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=CjkWordTokenizer())
        self.pool = list(pool)
        self.seen = {p.strip().lower() for p in pool}
        self.min_units, self.max_units, self.max_rouge = min_units, max_units, max_rouge
        self.blocked = blocked

    def reason(self, task: Task) -> str | None:
        text = task.instruction
        units = length_in_units(text)
        if units < self.min_units:
            return "too_short"
        if units > self.max_units:
            return "too_long"
        lowered = text.lower()
        words = set(re.findall(r"[a-z]+", lowered))
        if any((w in words) if w.isascii() and " " not in w else (w in lowered) for w in self.blocked):
            return "blocked_word"
        if not text[0].isalnum() and not ("\u3400" <= text[0] <= "\u9fff"):
            return "starts_with_symbol"
        if not task.output.strip():
            return "empty_output"
        if lowered.strip() in self.seen:
            return "duplicate"
        if self.pool:
            best = max(self.scorer.score(existing, text)["rougeL"].fmeasure for existing in self.pool)
            if best > self.max_rouge:
                return "similar_instruction"
        return None

    def add(self, task: Task) -> None:
        self.pool.append(task.instruction)
        self.seen.add(task.instruction.strip().lower())
