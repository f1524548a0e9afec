"""The one listen-address rule shared by the exporter, the proxy and the live page."""
import pytest

from shared.listen import ListenError, check_listen, parse_listen


@pytest.mark.parametrize("text,host,port", [("127.0.0.1:8765", "127.0.0.1", 8765), ("8765", "127.0.0.1", 8765),
                                            ("[::1]:9", "::1", 9), ("localhost:0", "localhost", 0),
                                            ("0.0.0.0:11435", "0.0.0.0", 11435)])
def test_parses_host_and_port(text, host, port):
    got = parse_listen(text)
    assert (got.host, got.port) == (host, port)


@pytest.mark.parametrize("text", ["", ":80", "host", "host:x", "1.2.3.4:70000", "[::1]80"])
def test_bad_addresses_name_the_flag(text):
    with pytest.raises(ListenError, match="--listen"):
        parse_listen(text)


def test_loopback_needs_no_flag():
    assert check_listen(parse_listen("127.0.0.2:1"), allow_remote=False) is None
    assert check_listen(parse_listen("[::1]:1"), allow_remote=False) is None


def test_non_loopback_is_refused_without_the_flag_and_warned_with_it():
    with pytest.raises(ListenError, match="--allow-remote"):
        check_listen(parse_listen("0.0.0.0:8765"), allow_remote=False)
    warning = check_listen(parse_listen("0.0.0.0:8765"), allow_remote=True)
    assert warning and "no authentication" in warning


def test_prometheus_exporter_follows_the_same_rule(capsys):
    """The exporter takes --listen and --allow-remote like the proxy and the page; its older --addr
    and --port still work but cannot expose it without --allow-remote either."""
    from telemetry import prometheus

    assert prometheus.main(["--addr", "0.0.0.0", "--port", "0", "--duration", "0.1"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert prometheus.main(["--listen", "0.0.0.0:0", "--duration", "0.1"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert prometheus.main(["--listen", "127.0.0.1:0", "--duration", "0.1"]) == 0
