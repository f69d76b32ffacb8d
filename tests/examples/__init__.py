"""Tests of the walk-through examples, the Dockerfile and the Kubernetes manifests."""
