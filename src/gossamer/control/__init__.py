"""The control plane: a store of resources, its REST + watch API, and (later) translation and push.

Nothing here imports `gossamer.proxy`: proxies and the control plane meet only in
`gossamer.snapshot`. Heavy modules (Starlette, uvicorn, httpx, the resource model) load when the
`gossamer control-plane` command runs, never at import of this package.
"""
