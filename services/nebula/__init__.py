"""The Nebula overlay: one agent process per node, and on the CA holder the authority.

- agent/: the nebula-agent process (main.py, gRPC NebulaAgent): keeps the real nebula, a
  supervisord program of its own, in line with the state directory, and reports on it.
- authority/: what only the CA holder does: join tokens, the address table, enrollment
  (holder.py) over its HTTPS endpoint (server.py), revocation.
- overlay/: what every member holds and reads: the state directory's nebula/ part,
  membership, the CA-signed mesh record, Nebula keys and certificates, and nebula's
  config.yml rendered from them.
- cli.py, bootstrap.py, client.py: `meshworker init | token | join | revoke`.
"""
