"""Who a node is and whom it trusts.

- node_key: this node's ed25519 key (its records' signatures);
- proofs: what proves a key is a member's (the mesh secret's HMAC, or the overlay CA's word);
- trust: which proofs this node accepts (the CA's alone in an overlay), and its own;
- mesh_ca, overlay, revocation: the mTLS side, the mesh's TLS CA (derived from the mesh
  secret, or held by the overlay's CA holder), this node's certificate naming it
  `spiffe://meshworker/<mesh id>/node/<worker id>`, and the CA's revocation list, which the
  router hands Envoy.
"""
