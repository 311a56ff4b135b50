"""The mesh side of the control plane: store mirror, registry, translation and push to proxies."""
