"""Protocol v4 profile (runtimed 2.9.0): five documents per room, no CommSync feed."""
