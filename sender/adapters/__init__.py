"""I/O behind the core's ports: PostgreSQL ledger, Redis status and limiter store,
RabbitMQ topology, consumer and publisher, and the inbox HTTP client."""
