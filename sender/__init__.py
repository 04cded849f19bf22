"""Campaign sender: RabbitMQ pages in, rate-limited inbox API calls out, outcomes in a ledger."""

__version__ = "0.1.0"
