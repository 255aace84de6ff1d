"""Drivers: the infrastructure behind the ports of `adapters/ports.py` (AWS, Kubernetes and a
simulation). Each is imported only by who uses it, so boto3 or kubernetes load on demand."""
