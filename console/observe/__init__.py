"""What the ecosystem watches a consumer with: Prometheus metrics and health endpoints
(console.observe.endpoint), served from inside the consumer's process."""
