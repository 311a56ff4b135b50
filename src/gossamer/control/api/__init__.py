"""The resource API: Kubernetes-style paths, verbs, watches and Status errors, on Starlette."""
