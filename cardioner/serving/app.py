"""The ASGI application of ``cardioner serve`` (FastAPI): predictions over HTTP and for INCEpTION.

- ``POST /predict``: ``{"texts": [...]}`` or ``{"documents": [{"id", "text"}, ...]}`` -> ``{"documents":
  [{"id", "spans": [{"start", "end", "label", "text", "score"}]}]}`` (ids of texts: "0", "1", ...).
- ``GET /health``: ``{"status": "ok"}`` once the model is loaded.
- ``GET /info``: the model (types, tags, decoder, windows), its card's metadata, versions and serving limits.
- ``POST /inception/predict`` (and ``/inception/train``): INCEpTION's external-recommender protocol
  (``cardioner.serving.inception``).

Bad input gets a 4xx answer ``{"detail": "one sentence"}``; request texts are never logged unless
``log_texts`` is set.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from cardioner import __version__
from cardioner.data.document import Document
from cardioner.serving import inception
from cardioner.serving.batching import MicroBatcher
from cardioner.serving.engine import Engine, span_record
from cardioner.values import counted

logger = logging.getLogger("cardioner.serve")

#: the environment variable that carries ServeSettings to each worker process (``uvicorn --workers``)
SETTINGS_ENV = "CARDIONER_SERVE_SETTINGS"


@dataclass(frozen=True)
class ServeSettings:
    """How ``cardioner serve`` runs; every field is a ``serve`` option.

    Args:
        model: the export folder.
        batch_size: windows per forward pass.
        max_batch_size: the most documents gathered from concurrent requests into one model call.
        max_wait_ms: how long a request waits for others to share its model call.
        max_request_bytes: the largest request body accepted (413 above it).
        max_length: window size in subwords (None: as trained).
        stride: window overlap in subwords (None: as trained).
        threads: torch threads of this process (None: torch's default).
        log_texts: log request texts (debugging only: clinical text must not reach logs by default).
        inception_layer: the layer INCEpTION may ask predictions for.
        inception_feature: the feature of that layer that takes the entity type.
    """

    model: str
    batch_size: int = 32
    max_batch_size: int = 64
    max_wait_ms: float = 5.0
    max_request_bytes: int = 16 * 1024 * 1024
    max_length: int | None = None
    stride: int | None = None
    threads: int | None = None
    log_texts: bool = False
    inception_layer: str = "de.tudarmstadt.ukp.dkpro.core.api.ner.type.NamedEntity"
    inception_feature: str = "value"

    def check(self) -> ServeSettings:
        """Raise a one-sentence ValueError for a setting out of range; returns self."""
        for name in ("batch_size", "max_batch_size", "max_request_bytes", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        return self

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeSettings:
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise RuntimeError(f"{SETTINGS_ENV} is not set: start the server with `cardioner serve`")
        return cls(**json.loads(raw)).check()


# --------------------------------------------------------------------------------------------- request bodies
class DocumentIn(BaseModel):
    """One document to annotate; its id comes back with its spans."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, description="returned as given; default: the document's index")
    text: str = Field(description="the text; offsets count its characters (code points) as sent")


class PredictRequest(BaseModel):
    """Texts or documents (one of the two, not empty)."""

    model_config = ConfigDict(extra="forbid")
    texts: list[str] | None = Field(default=None, description="plain texts")
    documents: list[DocumentIn] | None = Field(default=None, description="documents with ids")

    @model_validator(mode="after")
    def _one_non_empty_list(self) -> PredictRequest:
        if (self.texts is None) == (self.documents is None):
            raise ValueError('send either "texts" or "documents"')
        if not (self.texts or self.documents):
            raise ValueError("nothing to predict: the list is empty")
        return self

    def to_documents(self) -> list[Document]:
        if self.texts is not None:
            return [Document(str(index), text) for index, text in enumerate(self.texts)]
        return [Document(doc.id if doc.id is not None else str(index), doc.text)
                for index, doc in enumerate(self.documents)]


class SpanOut(BaseModel):
    start: int
    end: int
    label: str
    text: str
    score: float | None = Field(description="confidence in [0, 1]; null when the model gives none")


class DocumentOut(BaseModel):
    id: str
    spans: list[SpanOut]


class PredictResponse(BaseModel):
    documents: list[DocumentOut]


# ---------------------------------------------------------------------------------------------- request size
class RequestSizeLimit:
    """ASGI middleware: a body larger than ``max_bytes`` gets 413 with the limit in its message.

    A declared Content-Length over the limit is answered before the body is read (the body is drained, not
    kept, so that the client reads the answer); a chunked body is counted as it arrives.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _message(self, size: str) -> str:
        return (f"the request body ({size}) is larger than this server's limit of {self.max_bytes} bytes "
                "(the server's max_request_bytes setting)")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _drain(receive, limit=64 * self.max_bytes)
            await JSONResponse({"detail": self._message(f"{int(declared)} bytes")}, 413)(scope, receive, send)
            return
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._message(f"more than {self.max_bytes} bytes"))
            return message

        await self.app(scope, counting_receive, send)


async def _drain(receive, limit: int) -> None:
    """Read and drop a request body (up to ``limit`` bytes), so the client sees the answer, not a reset."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


# ---------------------------------------------------------------------------------------------- the app
def _validation_message(error: RequestValidationError) -> str:
    """One sentence from pydantic's errors: where and what,
    never the offending value (it may be patient text)."""
    parts = []
    for item in error.errors()[:5]:
        if item.get("type") == "json_invalid":
            return f"the body is not valid JSON ({item.get('ctx', {}).get('error', 'decode error')})"
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    more = len(error.errors()) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def create_app(settings: ServeSettings, engine: Engine | None = None) -> FastAPI:
    """The application; the export is loaded (once) at startup unless ``engine`` is given.

    Args:
        settings: the serving settings.
        engine: an Engine already loaded (tests; a preloaded model).
    """
    settings.check()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        loaded = engine or await run_in_threadpool(Engine, settings.model, settings.batch_size,
                                                   settings.max_length, settings.stride)
        batcher = MicroBatcher(loaded.predict, settings.max_batch_size, settings.max_wait_ms)
        await batcher.start()
        state.update(engine=loaded, batcher=batcher)
        logger.info("serving %s (%s) on its windows of %d subwords", loaded.info.name,
                    ", ".join(loaded.info.entity_types), loaded.info.max_length)
        yield
        await batcher.stop()
        state.clear()

    app = FastAPI(title="cardioner", version=__version__, lifespan=lifespan,
                  description="Named-entity recognition with a cardioner export.")
    app.add_middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = error.errors()
        if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
            return JSONResponse(
                {"detail": 'the body is empty; send {"texts": [...]} or {"documents": [...]}'}, 400
            )
        status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
        return JSONResponse({"detail": _validation_message(error)}, status)

    async def predict_documents(docs: list[Document]) -> list[Document]:
        if settings.log_texts:
            for doc in docs:
                logger.info("request document %s: %r", doc.id, doc.text)
        try:
            return await state["batcher"].submit(docs)
        except Exception as error:
            logger.error("prediction failed: %s", type(error).__name__,
                         exc_info=settings.log_texts)  # a message may quote the text: only when asked
            raise HTTPException(
                500, f"prediction failed ({type(error).__name__}); see the server log"
            ) from None

    @app.post("/predict", response_model=PredictResponse, summary="entities in texts or documents")
    async def predict(body: PredictRequest) -> dict:
        docs = body.to_documents()
        predicted = await predict_documents(docs)
        return {
            "documents": [
                {"id": doc.id, "spans": [span_record(doc.text, span) for span in doc.sorted_spans()]}
                for doc in predicted
            ]
        }

    @app.get("/health", summary="the model is loaded and the queue runs")
    async def health() -> dict:
        return {"status": "ok", "waiting": state["batcher"].waiting}

    @app.get("/info", summary="the model, its card's metadata, versions and serving limits")
    async def info() -> dict:
        loaded: Engine = state["engine"]
        batcher: MicroBatcher = state["batcher"]
        model = asdict(loaded.info)
        return {
            "cardioner_version": __version__,
            "model": {key: value for key, value in model.items() if key != "card"},
            "card": model["card"],
            "serving": {
                "batch_size": settings.batch_size,
                "max_batch_size": settings.max_batch_size,
                "max_wait_ms": settings.max_wait_ms,
                "max_request_bytes": settings.max_request_bytes,
                "batches": batcher.batches,
                "documents": batcher.documents,
                "inception": {"layer": settings.inception_layer, "feature": settings.inception_feature},
            },
        }

    @app.post("/inception/predict", summary="INCEpTION external recommender: predict into the sent CAS")
    async def inception_predict(request: Request) -> JSONResponse:
        payload = await _json_object(request)
        try:
            recommend = await run_in_threadpool(inception.parse_request, payload, settings.inception_layer,
                                                settings.inception_feature)
        except inception.RecommenderRequestError as error:
            raise HTTPException(422, str(error)) from None
        predicted = await predict_documents([Document(recommend.document_id, recommend.text)])
        xmi, added = await run_in_threadpool(inception.respond, recommend, predicted[0].spans)
        logger.info("INCEpTION document %s: %s", recommend.document_id, counted(added, "prediction"))
        return JSONResponse({"document": xmi})

    @app.post(
        "/inception/train", status_code=204, summary="INCEpTION external recommender: training (ignored)"
    )
    async def inception_train(request: Request) -> None:
        await _json_object(request)
        logger.info(
            "INCEpTION sent training data; this recommender is a fixed export and does not train on it "
            "(set its training capability to 'not supported' in INCEpTION)"
        )

    return app


async def _json_object(request: Request) -> dict:
    """The request body as a JSON object, or a 400 that says why not."""
    body = await request.body()
    if not body:
        raise HTTPException(400, "the body is empty; send a JSON object")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HTTPException(400, f"the body is not valid JSON ({error.__class__.__name__}: "
                                 f"{getattr(error, 'msg', 'undecodable bytes')})") from None
    if not isinstance(payload, dict):
        raise HTTPException(400, f"the body must be a JSON object, got a JSON {type(payload).__name__}")
    return payload


def app_from_env() -> FastAPI:
    """The application of one ``uvicorn`` worker process, its settings from ``CARDIONER_SERVE_SETTINGS``."""
    if not logging.getLogger().handlers:  # a worker process started by uvicorn: log as the parent does
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    return create_app(ServeSettings.from_env())
