"""k2rl shared runtime: one way to configure, start, observe and call a k2rl service."""
