"""Protocol v4 (runtimed 2.9.0): five documents per room, no CommSync feed.

`profile.V4Profile` is listed in `inspector.profiles.PROFILES`; `room` reads the documents,
`divergence` holds the v4 comm views, `manifests` the output manifests, `replay` a frame log.
"""
