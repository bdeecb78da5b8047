"""``cardioner serve`` (issue 20, Done-when 1 and 2): the real server in a subprocess on localhost.

A tiny BERT + CRF is trained here for a few steps (its head then spread with noise, as in test_scripts.py, so
that it predicts many entities) and served by ``python -m cardioner serve``. 200 ``/predict`` requests go 8 at
a time from real HTTP clients in threads, and every answer must equal ``cardioner predict`` on the same texts;
bad requests get a 4xx with a message and the server keeps serving. INCEpTION's recommender gets a CAS built
with dkpro-cassis on INCEpTION's named-entity type system and must answer the predictions at their offsets.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from noisy_export import noisy_tiny_export
from typer.testing import CliRunner

from cardioner.cli import app
from cardioner.data import read_corpus
from cardioner.data.common import read_text
from cardioner.data.document import Document, Span

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
cassis = pytest.importorskip("cassis")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "ncbi_sample"
SECRET = "ZEBRA-7731 never logged"  # a marker in request texts that must not reach the server's log
REQUEST_LIMIT = 200_000

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def export(one_thread, tmp_path_factory) -> Path:
    """A tiny BERT + CRF that predicts many entities (tests/noisy_export.py)."""
    return noisy_tiny_export(tmp_path_factory.mktemp("export"), seed=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(export, tmp_path_factory):
    """``python -m cardioner serve`` on a free localhost port; yields (base URL, path of its log)."""
    log_path = tmp_path_factory.mktemp("serve_log") / "server.log"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "cardioner", "serve", "--model", str(export), "--port", str(port),
               "--threads", "1", "--max-batch-size", "16", "--max-wait-ms", "10",
               "--max-request-bytes", str(REQUEST_LIMIT)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"the server exited ({process.returncode}):\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(
                f"the server did not answer /health in 180 s:\n{log_path.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.3)
    yield url, log_path
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Texts of every size: sentences, paragraphs and whole abstracts (many windows), plus odd ones."""
    abstracts = [read_text(p) for folder in ("test", "dev") for p in sorted((SAMPLE / folder).glob("*.txt"))]
    pieces = []
    for abstract in abstracts:
        pieces.append(abstract)  # whole: several 48-subword windows
        pieces += [s.strip() + "." for s in abstract.split(". ") if s.strip()][:6]
    odd = [
        "",
        "   ",
        "Breast cancer.\r\nOvarian cancer\r\n",
        "Ataxia-telangiectasia 🧬 in café patients: BRCA1.",
        f"{SECRET}: hereditary hemochromatosis and colorectal cancer.",
    ]
    return odd + pieces


@pytest.fixture(scope="module")
def expected(export, texts, tmp_path_factory) -> dict[str, list[dict]]:
    """``cardioner predict --format jsonl`` on every text: {text: [{start, end, label, text}]}."""
    root = tmp_path_factory.mktemp("predict")
    inputs = root / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(texts)),
                      encoding="utf-8")
    output = root / "predicted.jsonl"
    result = CliRunner().invoke(app, ["predict", "--model", str(export), "--input", str(inputs), "--output",
                                      str(output), "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    answers = {}
    for line in output.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        text = texts[int(record["id"][1:])]
        answers[text] = sorted(
            (s["start"], s["end"], s["label"], text[s["start"] : s["end"]], s["score"])
            for s in record["spans"]
        )
    return answers


def same_answer(document: dict, predicted: list[tuple]) -> bool:
    """The served spans are predict's, each with predict's confidence (to float noise: batches differ)."""
    served = sorted((s["start"], s["end"], s["label"], s["text"], s["score"]) for s in document["spans"])
    return [s[:4] for s in served] == [p[:4] for p in predicted] and all(
        abs(s[4] - p[4]) < 1e-4 for s, p in zip(served, predicted, strict=True)
    )


# ----------------------------------------------------------------------------------------------- Done-when 1
def test_200_concurrent_requests_equal_cardioner_predict(server, texts, expected):
    url, _ = server
    # the model predicts: the comparison means something
    assert sum(len(spans) for spans in expected.values()) > 50
    rng = random.Random(0)
    requests = []
    for index in range(200):
        chosen = rng.sample(texts, rng.randint(1, 3))
        if index % 2:
            requests.append({"texts": chosen})
        else:
            requests.append({"documents": [{"id": f"r{index}-{k}", "text": t} for k, t in enumerate(chosen)]})
    before = httpx.get(f"{url}/info").json()["serving"]["batches"]

    def send(body: dict) -> tuple[dict, dict, float]:
        with httpx.Client(timeout=120) as client:
            start = time.perf_counter()
            response = client.post(f"{url}/predict", json=body)
            assert response.status_code == 200, response.text
            return body, response.json(), time.perf_counter() - start

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, requests))
    for body, answer, _ in answers:
        sent = body.get("texts") or [d["text"] for d in body["documents"]]
        ids = [str(i) for i in range(len(sent))] if "texts" in body else [d["id"] for d in body["documents"]]
        assert [d["id"] for d in answer["documents"]] == ids
        for text, document in zip(sent, answer["documents"], strict=True):
            assert same_answer(document, expected[text]), text[:80]
            assert all(0 <= s["score"] <= 1 for s in document["spans"])
    batches = httpx.get(f"{url}/info").json()["serving"]["batches"] - before
    assert batches < len(requests)  # concurrent requests shared model calls


def test_bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving(server, expected, texts):
    url, log_path = server
    cases = [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b"", "application/json", 400, "empty"),
        (b"[1, 2]", "application/json", 422, "dictionary"),
        (b"{}", "application/json", 422, 'either "texts" or "documents"'),
        (b'{"texts": []}', "application/json", 422, "empty"),
        (b'{"texts": "one string"}', "application/json", 422, "texts"),
        (b'{"texts": ["a"], "documents": []}', "application/json", 422, 'either "texts" or "documents"'),
        (b'{"txts": ["a"]}', "application/json", 422, "txts"),
        (b'{"documents": [{"id": "a"}]}', "application/json", 422, "documents.0.text"),
        (b'{"documents": [{"text": 5}]}', "application/json", 422, "documents.0.text"),
        (json.dumps({"texts": ["x" * REQUEST_LIMIT]}).encode(), "application/json", 413, str(REQUEST_LIMIT)),
    ]
    with httpx.Client(timeout=60) as client:
        for body, content_type, status, fragment in cases:
            response = client.post(f"{url}/predict", content=body, headers={"content-type": content_type})
            assert response.status_code == status, (body[:60], response.text)
            detail = response.json()["detail"]
            assert isinstance(detail, str) and fragment in detail, (body[:60], detail)
            assert "Traceback" not in response.text and "x" * 100 not in response.text

        def chunks():  # no Content-Length: counted as it arrives
            yield b'{"texts": ["'
            for _ in range(REQUEST_LIMIT // 10_000 + 1):
                yield b"y" * 10_000
            yield b'"]}'

        response = client.post(
            f"{url}/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413 and str(REQUEST_LIMIT) in response.json()["detail"]
        assert client.get(f"{url}/predict").status_code == 405
        text = texts[-1]  # still serving, and still right
        response = client.post(f"{url}/predict", json={"texts": [text, SECRET]})
        assert response.status_code == 200 and same_answer(response.json()["documents"][0], expected[text])
    log = log_path.read_text(encoding="utf-8", errors="replace")
    assert SECRET not in log and "x" * 100 not in log  # no request text in the server's log
    assert "POST /predict" in log  # the access log is there (paths and status codes only)


def test_health_and_info_describe_the_model_and_its_card(server, export):
    url, _ = server
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    info = httpx.get(f"{url}/info").json()
    assert info["model"]["entity_types"] == sorted({s.label for d in read_corpus(SAMPLE / "train")[0][:12]
                                                     for s in d.spans})
    assert info["model"]["decoder"] == "crf" and info["model"]["max_length"] == 48
    assert info["model"]["name"] == export.name and info["cardioner_version"]
    assert (
        info["card"]["library_name"] == "transformers"
        and info["card"]["pipeline_tag"] == "token-classification"
    )
    assert info["serving"]["max_request_bytes"] == REQUEST_LIMIT


# ----------------------------------------------------------------------------------------------- Done-when 2
NAMED_ENTITY = "de.tudarmstadt.ukp.dkpro.core.api.ner.type.NamedEntity"
TOKEN = "de.tudarmstadt.ukp.dkpro.core.api.segmentation.type.Token"
SENTENCE = "de.tudarmstadt.ukp.dkpro.core.api.segmentation.type.Sentence"
CAS_METADATA = "de.tudarmstadt.ukp.clarin.webanno.api.type.CASMetadata"


def inception_type_system():
    """The type system INCEpTION sends for a project with its named-entity layer: DKPro Core's (as
    cassis ships it: Token, Sentence, NamedEntity with value and identifier), the features
    INCEpTION adds to a layer for recommenders (``<feature>_score``,
    ``<feature>_score_explanation``, ``inception_internal_predicted``) and its CASMetadata."""
    from cassis import load_dkpro_core_typesystem
    from cassis.typesystem import TYPE_NAME_BOOLEAN, TYPE_NAME_DOUBLE, TYPE_NAME_LONG, TYPE_NAME_STRING

    ts = load_dkpro_core_typesystem()
    entity = ts.get_type(NAMED_ENTITY)
    for feature in ("value", "identifier"):
        ts.create_feature(entity, f"{feature}_score", TYPE_NAME_DOUBLE)
        ts.create_feature(entity, f"{feature}_score_explanation", TYPE_NAME_STRING)
    ts.create_feature(entity, "inception_internal_predicted", TYPE_NAME_BOOLEAN)
    metadata = ts.create_type(CAS_METADATA, supertypeName="uima.cas.TOP")
    for feature, kind in (("projectId", TYPE_NAME_LONG), ("sourceDocumentId", TYPE_NAME_LONG),
                          ("username", TYPE_NAME_STRING)):
        ts.create_feature(metadata, feature, kind)
    return ts


def inception_request(text: str, ts, layer: str = NAMED_ENTITY) -> tuple[dict, list[tuple[int, int]]]:
    """INCEpTION's prediction request for ``text``: tokens as the model's words (a regex word splitter),
    one sentence per line, and one annotation the annotator made (which must come back untouched)."""
    import re

    from cassis import Cas

    cas = Cas(typesystem=ts)
    cas.sofa_string = text
    tokens = [(m.start(), m.end()) for m in re.finditer(r"\w+|[^\w\s]", text)]
    for begin, end in tokens:
        cas.add(ts.get_type(TOKEN)(begin=begin, end=end))
    offset = 0
    for line in text.split("\n"):
        if line.strip():
            cas.add(ts.get_type(SENTENCE)(begin=offset, end=offset + len(line)))
        offset += len(line) + 1
    cas.add(ts.get_type(NAMED_ENTITY)(begin=tokens[0][0], end=tokens[0][1], value="ANNOTATOR",
                                      inception_internal_predicted=False))
    cas.add(ts.get_type(CAS_METADATA)(projectId=7, sourceDocumentId=42, username="annotator"))
    payload = {
        "metadata": {"layer": layer, "feature": "value", "projectId": 7, "anchoringMode": "tokens",
                     "crossSentence": False},
        "document": {"xmi": cas.to_xmi(), "documentId": 42, "userId": "annotator"},
        "typeSystem": ts.to_xml(),
    }
    return payload, tokens


def test_inception_recommender_returns_the_predictions_at_their_offsets(server, expected, texts):
    from cassis import load_cas_from_xmi

    url, _ = server
    ts = inception_type_system()
    text = max(texts, key=len)  # a whole abstract: many windows
    payload, tokens = inception_request(text, ts)
    response = httpx.post(f"{url}/inception/predict", json=payload, timeout=120)
    assert response.status_code == 200, response.text
    cas = load_cas_from_xmi(response.json()["document"], typesystem=ts)
    assert cas.sofa_string == text
    entities = cas.select(NAMED_ENTITY)
    predicted = sorted(
        (e.begin, e.end, e.value, e.get_covered_text()) for e in entities if e.inception_internal_predicted
    )
    starts, ends = {b for b, _ in tokens}, {e for _, e in tokens}
    wanted = [span[:4] for span in expected[text]]
    assert wanted and all(s in starts and e in ends for s, e, _, _ in wanted)  # spans on the CAS's tokens
    assert predicted == wanted
    kept = [e for e in entities if not e.inception_internal_predicted]
    assert [(e.begin, e.end, e.value) for e in kept] == [(tokens[0][0], tokens[0][1], "ANNOTATOR")]
    assert all(e.value_score is None or 0 <= e.value_score <= 1 for e in entities)
    metadata = cas.select(CAS_METADATA)
    assert len(metadata) == 1 and metadata[0].sourceDocumentId == 42


def test_inception_recommender_refuses_what_it_cannot_answer(server, texts):
    url, _ = server
    ts = inception_type_system()
    payload, _ = inception_request(texts[-1], ts, layer="webanno.custom.Disease")
    cases = [
        (payload, "webanno.custom.Disease"),
        ({"metadata": {}}, "document must be an object"),
        ({**payload, "metadata": {**payload["metadata"], "layer": NAMED_ENTITY},
          "document": {"xmi": "<not xmi"}}, "document.xmi is not a CAS XMI"),
        ({**payload, "metadata": {**payload["metadata"], "layer": NAMED_ENTITY}, "typeSystem": "<x/>"},
         "type system"),
    ]
    for body, fragment in cases:
        response = httpx.post(f"{url}/inception/predict", json=body, timeout=60)
        assert response.status_code == 422 and fragment in response.json()["detail"], response.text
    assert httpx.post(f"{url}/inception/predict", content=b"[]").status_code == 400
    assert httpx.post(f"{url}/inception/train", json={"metadata": {}, "documents": []}).status_code == 204


def test_spans_are_anchored_as_the_inception_layer_is():
    from cardioner.serving.inception import anchor_spans

    tokens = [(0, 5), (6, 13), (14, 19), (19, 20), (21, 26), (27, 32)]  # "Renal failure, acute"-like
    sentences = [(0, 20), (21, 32)]
    spans = [Span(0, 13, "A"), Span(2, 9, "B"), Span(6, 26, "C"), Span(14, 15, "D"), Span(28, 30, "E"),
             Span(0, 4, "A")]
    anchored, dropped = anchor_spans(spans, tokens, sentences, "tokens", cross_sentence=False)
    # B widens to whole tokens; C crosses a sentence boundary; A from 0-4 widens to 0-5 (a new span)
    assert [(s.start, s.end, s.label) for s in anchored] == [(0, 13, "A"), (0, 13, "B"), (14, 19, "D"),
                                                             (27, 32, "E"), (0, 5, "A")]
    assert dropped == 1
    single, _ = anchor_spans(spans, tokens, sentences, "singleToken", cross_sentence=True)
    assert [(s.start, s.end, s.label) for s in single] == [(14, 19, "D"), (27, 32, "E"), (0, 5, "A")]
    characters, dropped = anchor_spans(spans, tokens, sentences, "characters", cross_sentence=True)
    assert characters == spans and dropped == 0
    assert anchor_spans(spans, [], [], "tokens", cross_sentence=False)[0] == spans  # no tokens: as predicted
    sentence_level, _ = anchor_spans([Span(2, 4, "S")], tokens, sentences, "sentences")
    assert [(s.start, s.end) for s in sentence_level] == [(0, 20)]


# ----------------------------------------------------------------------------------------------- the queue
def test_the_batcher_gathers_concurrent_requests_and_routes_each_answer_back():
    import asyncio

    from cardioner.serving.batching import MicroBatcher

    calls: list[list[str]] = []

    def predict(docs: list[Document]) -> list[Document]:
        calls.append([d.id for d in docs])
        time.sleep(0.05)
        if any(d.text == "boom" for d in docs):
            raise RuntimeError("model failed")
        return [Document(d.id, d.text, [Span(0, len(d.text), d.text.upper())]) for d in docs]

    async def scenario():
        batcher = MicroBatcher(predict, max_batch_size=4, max_wait_ms=20)
        await batcher.start()
        try:
            requests = [[Document(f"{i}-{k}", f"t{i}{k}") for k in range(1 + i % 2)] for i in range(9)]
            answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
            failed = await asyncio.gather(batcher.submit([Document("x", "boom")]), return_exceptions=True)
            after = await batcher.submit([Document("y", "ok")])
        finally:
            await batcher.stop()
        return requests, answers, failed, after

    requests, answers, failed, after = asyncio.run(scenario())
    for request, answer in zip(requests, answers, strict=True):
        assert [(d.id, d.spans[0].label) for d in answer] == [(d.id, d.text.upper()) for d in request]
    assert len(calls) < len(requests) + 2 and max(len(c) for c in calls) <= 4  # gathered, never above the cap
    # an error ends one batch only
    assert isinstance(failed[0], RuntimeError) and after[0].spans[0].label == "OK"


# ----------------------------------------------------------------------------------------------- the command
def test_serve_refuses_what_it_cannot_serve_in_one_sentence(tmp_path, export):
    def failure(*args: str) -> str:
        result = CliRunner().invoke(app, ["serve", *args])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        return result.output

    assert "no such folder" in failure("--model", str(tmp_path / "missing"))
    assert "not an exported model folder" in failure("--model", str(tmp_path))
    assert "--workers must be >= 1, got 0" in failure("--model", str(export), "--workers", "0")
    assert "--max-batch-size must be >= 1, got 0" in failure("--model", str(export), "--max-batch-size", "0")
    assert "--port must be in 0..65535" in failure("--model", str(export), "--port", "70000")
    with socket.socket() as busy:  # another server on the port: said before the model loads, not by uvicorn
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert (f"--port {port} on 127.0.0.1 cannot be listened on (Address already in use; another server "
                "holds it)") in failure("--model", str(export), "--port", port)


@pytest.mark.slow
def test_several_workers_serve_the_same_answers(export, expected, texts):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cardioner",
            "serve",
            "--model",
            str(export),
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda t: httpx.post(f"{url}/predict", json={"texts": [t]}, timeout=120),
                                    texts[:40]))
        for text, answer in zip(texts[:40], answers, strict=True):
            assert answer.status_code == 200 and same_answer(answer.json()["documents"][0], expected[text])
    finally:
        process.terminate()
        process.wait(timeout=60)
