"""Zero trust: the mesh CA, workload identities, and the policies proxies enforce."""
