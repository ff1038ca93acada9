"""What every member of an overlay holds: where its state lives (state.py), its membership
and the CA-signed mesh record, Nebula keys and certificates (pki.py, made with nebula-cert),
and nebula's config.yml rendered from them (render.py, pure)."""
