"""One streamed chat completion against an OpenAI-compatible endpoint.

The official ``openai`` client is used with its own retries off: retrying, fallback
and caching are decisions of the layer above, not of the transport.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llmctl.config import ProviderConfig
from llmctl.errors import ProviderError


@dataclass
class Completion:
    text: str
    provider: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_reported: bool = False  # False: tokens were counted locally (server sent no usage)
    finish_reason: str | None = None
    latency_s: float = 0.0
    first_token_s: float | None = None
    events: list[str] = field(default_factory=list)

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "source": "provider" if self.usage_reported else "estimated"}


def api_key(provider: ProviderConfig, config_source: str) -> str:
    if not provider.api_key_env:
        return "no-key"  # local servers (llama.cpp, Ollama, vLLM) accept anything
    key = os.environ.get(provider.api_key_env)
    if not key:
        raise ProviderError(
            f"No API key: set {provider.api_key_env} (provider '{provider.name}' in {config_source})"
        )
    return key


def stream_chat(
    provider: ProviderConfig,
    messages: list[dict],
    *,
    temperature: float,
    max_tokens: int,
    key: str,
    on_token: Callable[[str], None] | None = None,
) -> Completion:
    """Stream one answer; tokens go to ``on_token`` as they arrive."""
    import openai

    client = openai.OpenAI(base_url=provider.base_url, api_key=key, timeout=provider.timeout,
                           max_retries=0)
    started = time.perf_counter()
    out = Completion("", provider.name, provider.model)
    parts: list[str] = []
    try:
        stream = client.chat.completions.create(
            model=provider.model, messages=messages, temperature=temperature, max_tokens=max_tokens,
            stream=True, stream_options={"include_usage": True},
        )
        for chunk in stream:
            if chunk.usage is not None:
                out.prompt_tokens = chunk.usage.prompt_tokens
                out.completion_tokens = chunk.usage.completion_tokens
                out.usage_reported = True
            for choice in chunk.choices or []:
                delta = choice.delta.content if choice.delta else None
                if delta:
                    if out.first_token_s is None:
                        out.first_token_s = time.perf_counter() - started
                    parts.append(delta)
                    if on_token:
                        on_token(delta)
                if choice.finish_reason:
                    out.finish_reason = choice.finish_reason
    except openai.APITimeoutError:
        raise ProviderError(
            f"Provider '{provider.name}' did not answer within {provider.timeout:g} s: "
            "raise its timeout or check the server"
        ) from None
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        raise ProviderError(
            f"Cannot reach provider '{provider.name}' at {provider.base_url} ({type(cause).__name__}): "
            "check base_url and that the server is running"
        ) from None
    except openai.AuthenticationError:
        raise ProviderError(
            f"Provider '{provider.name}' rejected the API key (HTTP 401): check {provider.api_key_env}"
        ) from None
    except openai.APIStatusError as exc:
        raise ProviderError(
            f"Provider '{provider.name}' answered HTTP {exc.status_code}: {_brief(exc)}"
        ) from None
    except openai.APIError as exc:  # malformed responses and the like
        raise ProviderError(f"Provider '{provider.name}' sent an invalid response: {exc}") from None
    out.text = "".join(parts)
    out.latency_s = time.perf_counter() - started
    if out.finish_reason is None:
        # Malformed bodies parse as an empty event stream: never pass that off as an answer.
        what = "a truncated stream" if parts else "no answer (malformed or empty response)"
        raise ProviderError(f"Provider '{provider.name}' sent {what}")
    return out


def _brief(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        msg = body.get("message") or (body.get("error") or {}).get("message")
        if msg:
            return str(msg)[:300]
    return str(exc)[:300]
