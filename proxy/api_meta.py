"""v5's `health` and `config` groups: liveness, readiness with components, the auth mode."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.routing import Endpoints, Operation
from proxy.state import proxy_of
from proxy.wire import meta

api = Endpoints()


@api.get(
    "/v1/health/",
    Operation(
        "livenessCheck", "Liveness: the proxy is running", "meta", response=meta.HealthCheck, public=True,
        description="No key needed; says nothing about LM Studio (see /v1/health/details).",
    ),
)  # fmt: skip
async def liveness(request: Request) -> Response:
    body: meta.HealthCheck = {"status": "healthy"}
    return JSONResponse(body)


@api.get(
    "/v1/health/details",
    Operation(
        "readinessCheck", "Readiness: the database, LM Studio and the running streams", "meta",
        response=meta.DetailedHealthCheck, public=True,
        response_description="status degraded (still 200) when LM Studio is unreachable. With auth.api_keys "
        "configured, a request without a valid key gets only {status: healthy, components: []} (liveness): "
        "the components name the database file and LM Studio's host.",
    ),
)  # fmt: skip
async def readiness(request: Request) -> Response:
    proxy = proxy_of(request)
    if not proxy.auth.open and not proxy.auth.accepts(request):
        liveness_only: meta.DetailedHealthCheck = {"status": "healthy", "components": []}
        return JSONResponse(liveness_only)
    try:
        proxy.store.ping()
        database: meta.ComponentStatus = {"name": "database", "status": "healthy", "details": proxy.store.path}
    except Exception as exc:  # a broken database is what this endpoint is for
        database = {"name": "database", "status": "unhealthy", "details": f"{proxy.store.path}: {exc}"}
    lm = await proxy.backends.health()
    hosts = lm.get("hosts", [])
    if lm["reachable"]:
        models = ", ".join(lm.get("loaded_models", [])) or "none"
        lmstudio: meta.ComponentStatus = {
            "name": "lmstudio", "status": "healthy", "details": f"{lm.get('host')} (loaded: {models})",
        }  # fmt: skip
        if len(hosts) > 1:
            lmstudio["details"] = f"{sum(h['state'] != 'down' for h in hosts)} of {len(hosts)} hosts answer"
    else:
        lmstudio = {"name": "lmstudio", "status": "unhealthy", "details": lm.get("error") or lm["looked_at"]}
    per_host: list[meta.ComponentStatus] = []
    if len(hosts) > 1:  # several LM Studio hosts: one component each, beside the summary
        for h in hosts:
            loaded = ", ".join(h["loaded_models"]) or "none"
            details = f"{h['active_streams']} active, loaded: {loaded}"
            if h["state"] == "down":
                details = f"does not answer: {h.get('error', '')}"
            healthy = h["state"] != "down"
            per_host.append({"name": f"lmstudio {h['host']}", "status": "healthy" if healthy else "unhealthy",
                             "details": details})  # fmt: skip
    streams: meta.ComponentStatus = {
        "name": "streams", "status": "healthy", "details": f"{len(proxy.registry.streams)} active",
    }  # fmt: skip
    components = [database, lmstudio, *per_host, streams]
    healthy = all(c["status"] == "healthy" for c in components)
    body: meta.DetailedHealthCheck = {"status": "healthy" if healthy else "degraded", "components": components}
    return JSONResponse(body)


@api.get(
    "/v1/config/auth-mode",
    Operation(
        "getAuthMode", "How the proxy authenticates (public)", "meta", response=meta.AuthMode, public=True,
        description="api_key when auth.api_keys is configured, else open (any non-empty key is accepted). "
        "There is no login, so no dev login either.",
    ),
)  # fmt: skip
async def auth_mode(request: Request) -> Response:
    proxy = proxy_of(request)
    body: meta.AuthMode = {
        "authentication_mode": "open" if proxy.auth.open else "api_key",
        "dev_login_enabled": False,
        "dev_prefill_email": None,
        "dev_prefill_password": None,
    }
    return JSONResponse(body)


routes = api.routes
