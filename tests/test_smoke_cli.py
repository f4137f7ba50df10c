"""End-to-end smoke: the CLI as a user runs it, through pipes."""
from conftest import ndjson


def test_append_then_read_roundtrip(cli):
    r = cli("append", "acct-1", "--type", "Deposited", "--data", '{"amount": 10}')
    assert r.returncode == 0, r.stderr
    assert ndjson(r.stdout) == [{"stream": "acct-1", "version": 1, "position": 1, "count": 1}]
    r = cli("read", "acct-1")
    assert r.returncode == 0
    [ev] = ndjson(r.stdout)
    assert (ev["stream"], ev["version"], ev["position"], ev["type"], ev["data"]) == (
        "acct-1", 1, 1, "Deposited", {"amount": 10})
    assert r.stderr == b""
