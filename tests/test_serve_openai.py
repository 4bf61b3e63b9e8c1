"""The OpenAI contract of ``oml serve``: streamed answers, echoed prompts with their log-probabilities
(what lm-evaluation-harness scores through ``local-completions``), and chat content parts."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from omlkit.verification.serve import create_app, serve_in_thread


@pytest.fixture(scope="module")
def local(micro_model):
    from omlkit.verification.backends.transformers_backend import TransformersBackend

    return TransformersBackend(str(micro_model), batch_size=16)


@pytest.fixture(scope="module")
def served(local):
    with serve_in_thread(create_app(backend=local, served_name="micro")) as url:
        yield url


def _events(client: httpx.Client, path: str, body: dict) -> list:
    with client.stream("POST", path, json=body) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in reply.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(line[len("data: "):]) for line in lines[:-1]]


def test_stream_sends_the_same_answer_in_chunks(served):
    with httpx.Client(base_url=served, timeout=30) as c:
        body = {"prompt": "The quick", "max_tokens": 8}
        whole = c.post("/completions", json=body).json()["choices"][0]
        events = _events(c, "/completions", {**body, "stream": True})
        assert len(events) >= 3  # several token chunks and the closing one
        assert "".join(e["choices"][0]["text"] for e in events) == whole["text"]
        assert events[-1]["choices"][0]["finish_reason"] == whole["finish_reason"]
        assert all(e["object"] == "text_completion" for e in events)
        echoed = c.post("/completions", json={**body, "echo": True}).json()["choices"][0]["text"]
        events = _events(c, "/completions", {**body, "echo": True, "stream": True})
        assert "".join(e["choices"][0]["text"] for e in events) == echoed

        chat = {"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 8}
        whole = c.post("/chat/completions", json=chat).json()["choices"][0]
        events = _events(c, "/chat/completions", {**chat, "stream": True})
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
        assert text == whole["message"]["content"]
        assert events[-1]["choices"][0]["finish_reason"] == whole["finish_reason"]
        assert all(e["object"] == "chat.completion.chunk" for e in events)


def test_chat_content_parts_are_read_as_their_text(served):
    with httpx.Client(base_url=served, timeout=30) as c:
        plain = {"messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 6}
        content = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
        parts = {"messages": [{"role": "user", "content": content}], "max_tokens": 6}
        a, b = c.post("/chat/completions", json=plain), c.post("/chat/completions", json=parts)
        assert b.status_code == 200, b.text
        assert a.json()["choices"][0]["message"] == b.json()["choices"][0]["message"]
        picture = [{"type": "image_url", "image_url": {"url": "x"}}]
        image = {"messages": [{"role": "user", "content": picture}]}
        refused = c.post("/chat/completions", json=image)
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error"


def test_echo_returns_each_prompt_token_and_its_logprob(served, local):
    ids = local.encode("The river runs past the old mill")
    with httpx.Client(base_url=served, timeout=30) as c:
        reply = c.post("/completions", json={"prompt": ids, "max_tokens": 1, "logprobs": 1, "echo": True})
        only = c.post("/completions", json={"prompt": ids, "max_tokens": 0, "logprobs": 1, "echo": True})
        too_long = [ids[0]] * (local.max_length + 5)
        body = {"prompt": too_long, "max_tokens": 0, "logprobs": 1, "echo": True}
        refused = c.post("/completions", json=body)
        assert refused.status_code == 400 and "tokens" in refused.json()["error"]["message"]
        assert c.post("/completions", json={"prompt": ids, "max_tokens": 0}).status_code == 400  # no echo
    choice = reply.json()["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(ids) + 1
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    with torch.no_grad():
        logp = torch.log_softmax(local.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    expected = [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
    assert lp["token_logprobs"][1 : len(ids)] == pytest.approx(expected, abs=1e-4)
    # the top-1 at each prompt position is the argmax of the same distribution
    best = [float(logp[i - 1].max()) for i in range(1, len(ids))]
    assert [max(t.values()) for t in lp["top_logprobs"][1 : len(ids)]] == pytest.approx(best, abs=1e-4)
    assert len(only.json()["choices"][0]["logprobs"]["tokens"]) == len(ids)  # max_tokens 0: score only


def _mc_task(tmp_path, tok) -> str:
    """A 12-question multiple-choice task on held-out corpus sentences: which ending is the real one."""
    from omlkit.models.corpus import corpus_split

    docs = []
    texts = [t for t in corpus_split("heldout") if len(t.split()) > 14][:12]
    for i, text in enumerate(texts):
        words = text.split()
        other = texts[(i + 1) % len(texts)].split()
        docs.append({"question": " ".join(words[:10]), "choices": [" " + " ".join(words[10:14]),
                                                                   " " + " ".join(other[10:14])], "gold": 0})
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "omlkit_mc.yaml").write_text(
        "task: omlkit_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: "{{gold}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    return "omlkit_mc"


def test_lm_eval_scores_the_same_through_the_server_as_in_process(served, micro_model, local, tmp_path):
    """lm-evaluation-harness's ``local-completions`` (echo + logprobs through ``oml serve``) against its
    ``hf`` model in process: the same log-likelihood for every choice, so the same accuracy. The hf model
    starts each request with the tokenizer's BOS and local-completions does not unless told
    (``add_bos_token=True``, docs/verification.md)."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    task = _mc_task(tmp_path, local.tokenizer)
    manager = TaskManager(include_path=str(tmp_path))
    runs = {}
    for name, args in (
        ("hf", f"pretrained={micro_model},dtype=float32"),
        ("local-completions", f"model=micro,base_url={served}/completions,tokenizer={micro_model},"
                              "tokenized_requests=True,add_bos_token=True,num_concurrent=1,max_retries=1"),
    ):
        runs[name] = lm_eval.simple_evaluate(model=name, model_args=args, tasks=[task], task_manager=manager,
                                             device="cpu", batch_size=1, log_samples=True)
    scores = {name: [r["resps"] for r in out["samples"][task]] for name, out in runs.items()}
    flat = {name: [float(x[0][0]) for doc in s for x in doc] for name, s in scores.items()}
    assert len(flat["hf"]) == 24
    assert flat["local-completions"] == pytest.approx(flat["hf"], abs=1e-3)
    acc = {name: out["results"][task]["acc,none"] for name, out in runs.items()}
    assert acc["local-completions"] == acc["hf"]
