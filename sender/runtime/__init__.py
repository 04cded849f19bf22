"""The process around the core: composition root, consumer lifecycle, metrics, probes,
logging, and the operator services the CLI and the demo call."""
