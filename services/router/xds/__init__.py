"""The pure translation from the router's typed view of the mesh to Envoy's resources.

`view` holds what the router knows (local services, remote providers, this node's TLS
credentials); `resources.build(view)` turns one view into one
`Snapshot` of listeners, routes, clusters, endpoints and secrets, the way Envoy's
go-control-plane turns a typed snapshot into resources. No I/O here: the ADS server in
services/router/ads.py serves whatever snapshot it is given.
"""
