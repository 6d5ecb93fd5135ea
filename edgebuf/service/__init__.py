"""The edge inference service (``edgebuf edge``): the detector loop beside the buffered
client, with ``/health``, ``/ready``, ``/status`` and ``/metrics``."""
