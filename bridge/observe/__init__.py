"""What operators see: what one request learned (``exchange``), per-user lifecycle events,
metrics, the JSON log format and traces."""
