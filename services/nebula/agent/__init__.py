"""The nebula-agent process: nebula run by supervisord on the rendered config, its log and
stats read into ours, the overlay's status over gRPC, and on the CA holder the enrollment
endpoint (services/nebula/authority)."""
