"""The /v1 requests Envoy hands to Python: the list of the mesh's models, and a model name
it has no route for.

Every other /v1 request goes from Envoy to a provider by the `model` it names
(services/router/xds/models.py). A name without a route is read again from the mesh's
catalog by the router (ResolveModel answers once Envoy holds the outcome), then a 307 to
the same URL is followed by Envoy internally, like a new service name (resolve.py).
"""

from __future__ import annotations

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.api.errors import ApiError, unavailable
from services.api.node import ApiNode
from services.api.resolve import REDIRECTED, same_url
from services.common import grpcclient
from services.common.rpc import router_pb2

MODEL = "x-mesh-model"  # what Envoy read from the body's `model` (xds/models.py)
RESOLVE_DEADLINE_S = 5.0


def model_list(reply: router_pb2.MeshModelsResponse) -> dict:
    """OpenAI's model list, each entry with the nodes that serve it; an alias is an entry
    of its own (a client may look for the name it uses)."""
    data = []
    for model in reply.models:
        nodes = [{"worker_id": p.worker_id, "service": p.service, "local": p.local, "load_percent": p.load_percent}
                 for p in model.providers]
        entry = {"id": model.id, "object": "model", "created": 0, "owned_by": "meshworker", "kind": model.kind,
                 "context_length": model.context_length or None, "nodes": nodes}
        data += [entry] + [{**entry, "id": alias, "alias_of": model.id} for alias in model.aliases]
    return {"object": "list", "data": data}


async def models(request: Request) -> Response:
    node: ApiNode = request.app.state.node
    try:
        reply = await node.router.MeshModels(router_pb2.MeshModelsRequest(), timeout=grpcclient.DEADLINE_S)
    except grpc.aio.AioRpcError:
        return unavailable("router_unavailable", "the router is not answering").openai_response()
    return JSONResponse(model_list(reply))


def model_not_found(name: str) -> ApiError:
    return ApiError(404, "model_not_found", f"the model {name!r} does not exist in this mesh; "
                                            "GET /v1/models lists the models it serves")


MISSING_MODEL = ApiError(400, "missing_model", 'the body must be a JSON object naming a model: '
                                               '{"model": "<id>", ...}; GET /v1/models lists them')


async def unknown_model(request: Request) -> Response:
    """A POST whose model Envoy has no route for, or that names none (Envoy found no
    `model` string in a JSON body)."""
    async for _ in request.stream():  # to its end first, as resolve.py does
        pass
    node: ApiNode = request.app.state.node
    name = request.headers.get(MODEL, "")
    if not name:
        return MISSING_MODEL.openai_response("model")
    if REDIRECTED in request.headers:  # it came back: Envoy has no route even now
        return model_not_found(name).openai_response("model")
    try:
        resolution = await node.router.ResolveModel(router_pb2.ResolveModelRequest(model=name),
                                                    timeout=RESOLVE_DEADLINE_S)
    except grpc.aio.AioRpcError:
        return unavailable("router_unavailable", "the router is not answering").openai_response()
    if not resolution.found:
        return model_not_found(name).openai_response("model")
    return Response(status_code=307, headers={"location": same_url(request)})
