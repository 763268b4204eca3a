"""The `serve:` config section: defaults bind loopback, and a bad cache setting is refused
naming the field."""

from __future__ import annotations

import pytest
from pipeline_config import small_raw

from datablame.config import parse_config
from datablame.errors import DatablameError


def test_defaults_bind_loopback_with_auth_and_sqlite_cache(tmp_path):
    s = parse_config(small_raw(tmp_path)).serve
    assert (s.host, s.auth, s.cache, s.metrics_public) == ("127.0.0.1", True, "sqlite", False)


@pytest.mark.parametrize(("serve", "field"), [({"cache": "mysql://x"}, "serve.cache"),
                                               ({"queue_size": 0}, "serve.queue_size"),
                                               ({"max_k": 10**9}, "serve.max_k"),
                                               ({"bogus": 1}, "serve.bogus")])
def test_bad_serve_settings_are_refused_naming_the_field(tmp_path, serve, field):
    with pytest.raises(DatablameError) as err:
        parse_config({**small_raw(tmp_path), "serve": serve})
    assert field in str(err.value.problem)
