"""Delivery: getting buffered records to the cloud.

``transport`` (the only httpx user), ``policy`` (retry classification and backoff),
``sender`` (one attempt: body, classification, settling rows, bisecting poison),
``shipper`` (the shipping loop: live and backlog lanes, backoff, maintenance timers),
``connectivity`` (up / down from ``GET /health``), ``recovery`` (the design's
``BufferRecoveryManager``: the backlog lane), ``state`` (a read-only snapshot for status).
"""
