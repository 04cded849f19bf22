"""AMQP_URL gets a heartbeat unless it names one, so a partitioned broker is noticed."""

from sender.adapters.amqp_topology import DEFAULT_HEARTBEAT_S, broker_url


def test_a_url_without_heartbeat_gets_the_default() -> None:
    url = broker_url("amqp://guest:guest@127.0.0.1:5672/")
    assert url == f"amqp://guest:guest@127.0.0.1:5672/?heartbeat={DEFAULT_HEARTBEAT_S}"


def test_a_heartbeat_in_the_url_is_kept() -> None:
    assert broker_url("amqp://u:p@h/vh?heartbeat=3") == "amqp://u:p@h/vh?heartbeat=3"


def test_other_query_parameters_and_quoting_survive() -> None:
    url = broker_url("amqps://u:p%40x@h:5671/%2F?name=a")
    assert url == f"amqps://u:p%40x@h:5671/%2F?name=a&heartbeat={DEFAULT_HEARTBEAT_S}"
