"""Toptica's toptica-lasersdk, unchanged but for host and ports, against `hotspin sim serve`.

``DLCpro(NetworkConnection(host, command_line_port=P, monitoring_line_port=P + 1))`` is the SDK's
default connection with the device's ports 1998/1999 moved together: it purges the welcome up to
``"\\n> "``, reads each reply up to the prompt (``asyncio/connection.py``) and opens the
monitoring line for subscriptions (``asyncio/client.py``: ``(add 'name)``, updates
``(<timestamp> 'name value)``). ``get``, ``set``, ``get_set_value``, ``exec`` and ``subscribe``
are used as a lab script would.
"""

import threading

import pytest
from helpers.served_lab import served_lab
from toptica.lasersdk import client as lasersdk
from toptica.lasersdk.dlcpro import v2_4_0 as dlcpro

#: Longest wait for a monitoring-line update, s (a bound, not a delay).
UPDATE_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with served_lab(tmp_path_factory.mktemp("toptica")) as served:
        yield served


def connection(lab):
    port = lab.ports["laser"]
    return dlcpro.NetworkConnection(
        "127.0.0.1", command_line_port=port, monitoring_line_port=port + 1
    )


@pytest.fixture
def dlc(lab):
    with dlcpro.DLCpro(connection(lab)) as device:
        yield device


@pytest.fixture
def client(lab):
    with lasersdk.Client(connection(lab)) as low_level:
        yield low_level


def test_the_monitoring_line_is_printed_at_command_line_plus_one(lab):
    assert lab.companion("laser") == f"127.0.0.1:{lab.ports['laser'] + 1}"


def test_identify_and_read(dlc):
    assert dlc.system_type.get() == "DLCpro"
    assert dlc.serial_number.get() == "SIM-000001"
    assert dlc.fw_ver.get() == "2.4.0"
    assert dlc.laser1.product_name.get() == "DL pro 795"
    assert dlc.system_health.get() == 0
    assert dlc.system_health_txt.get() == "OK"
    assert dlc.interlock_open.get() is False
    assert dlc.laser1.dl.tc.temp_set.get() == pytest.approx(22.0)


def test_set_and_get_set_value(dlc, client):
    assert dlc.laser1.dl.cc.current_set.set(110.0) == 0
    assert dlc.laser1.dl.cc.current_set.get() == pytest.approx(110.0)
    assert client.get_set_value("laser1:dl:cc:current-set", float) == pytest.approx(110.0)
    assert client.set("system-label", "probe, 795 nm") == 0
    assert client.get("system-label", str) == "probe, 795 nm"


def test_exec_commands(dlc, client):
    summary = dlc.system_summary()
    assert "DL pro 795" in summary
    assert "laser1:dl:cc:current-act" in summary
    assert dlc.change_ul(lasersdk.UserLevel.NORMAL) == lasersdk.UserLevel.NORMAL
    assert client.exec("change-ul", 3, "", return_type=int) == 3
    assert client.get("ul", int) == 3


def test_invalid_requests_raise_the_clients_error(dlc, client):
    with pytest.raises(lasersdk.DecopError, match="Error: -4"):
        client.get("laser1:dl:cc:no-such-thing")
    with pytest.raises(lasersdk.DecopError, match="-6"):
        dlc.laser1.dl.tc.temp_set.set(99.0)  # outside the head's TEC range: refused, status -6
    assert dlc.laser1.dl.tc.temp_set.get() == pytest.approx(22.0)
    with pytest.raises(lasersdk.DecopError, match="Error:"):
        client.exec("no-such-command")


def test_subscribe_receives_the_value_and_its_changes(dlc):
    values = []

    def on_update(subscription, timestamp, value):
        values.append(value.get())
        dlc.stop()  # hand control back at each update

    dlc.laser1.dl.cc.current_set.set(121.0)
    with dlc.laser1.dl.cc.current_set.subscribe(on_update):
        dlc.run(UPDATE_TIMEOUT_S)
        assert values == [pytest.approx(121.0)]  # the present value, at once
        dlc.laser1.dl.cc.current_set.set(123.0)
        dlc.run(UPDATE_TIMEOUT_S)
    assert values == [pytest.approx(121.0), pytest.approx(123.0)]


def test_a_subscription_to_an_unknown_parameter_gets_an_error(client):
    errors, seen = [], threading.Event()

    def on_update(subscription, timestamp, value):
        try:
            value.get()
        except lasersdk.DecopError as error:
            errors.append(str(error))
            seen.set()
            client.stop()

    with client.subscribe("laser1:no-such-thing", on_update):
        client.run(UPDATE_TIMEOUT_S)
    assert seen.is_set()
    assert errors[0].startswith("Error: -4")
