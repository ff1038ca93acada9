"""Node identity for the mTLS data plane: the mesh's TLS CA (ECDSA P-256, derived from the
mesh secret, or held by the overlay's CA holder), this node's TLS key, the short-lived
certificates that name a node `spiffe://meshworker/<mesh id>/node/<worker id>`, and the
trust inputs (CA bundle, revoked nodes) the router hands Envoy. Pure functions where
possible; the only I/O is the node key file and reading the overlay's trust files.
"""
